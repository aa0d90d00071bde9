"""Backpropagation through time, written out: one autograd Function per cell.

The explicit backend's default lets autograd differentiate the step loop: simple, and right for
any cell, but it records ~15 small ops per step and re-reads ``W_hh`` once per step for its
gradient. These Functions hold the lecture's BPTT instead:

    forward:   for t = 1..T:  a_t = x_proj_t + W h_{t-1} + b;  h_t = cell(a_t, state_{t-1})
    backward:  for t = T..1:  da_t = dL/dh_t * d cell / d a_t      (the gate derivatives)
                              dL/dh_{t-1} = W^T da_t  (+ the direct paths, e.g. C_t -> C_{t-1})
               dL/dW = sum_t da_t h_{t-1}^T   one matrix product over all steps at the end
               dL/dx_proj_t = da_t            (the caller's V x_t + b_ih gets it in one product)

Each step's pointwise arithmetic sits in small functions that ``torch.compile`` fuses into one
kernel forward and one backward (``compile=True`` on a core). Masks (padded batches) keep a
finished sequence's state unchanged, exactly as the autograd path does. Parameters use
PyTorch's layout and gate order (LSTM: i, f, g, o; GRU: r, z, n), so the results match
``torch.nn`` and the tests check gradients against it in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _keep(mask_t: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if mask_t is None else torch.where(mask_t, new, old)


def _outputs(hs: Tensor, mask: Tensor | None) -> Tensor:
    """(T+1, B, H) states h_0..h_T -> (B, T, H) outputs, zero past each sequence's end."""
    output = hs[1:].transpose(0, 1)
    return output if mask is None else output * mask[..., None]


def _add_output_grad(dh: Tensor, d_output: Tensor | None, t: int, mask_t: Tensor | None) -> Tensor:
    """dL/dh_t gets the output's gradient at step t; padded outputs are constant zeros."""
    if d_output is None:
        return dh
    grad = d_output[:, t]
    return dh + (grad if mask_t is None else grad * mask_t)


def _split_grad(mask_t: Tensor | None, grad: Tensor) -> tuple[Tensor, Tensor | None]:
    """Gradient into a step's new value, and the part passing through a kept (masked) state."""
    if mask_t is None:
        return grad, None
    return grad * mask_t, grad * ~mask_t


# --------------------------------------------------------------------------- pointwise steps
def lstm_pointwise(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 4H) pre-activations -> activated gates (B, 4H), C_t, h_t."""
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c_prev + i * g  # C_t = f_t * C_{t-1} + i_t * C~_t
    h = o * c.tanh()  # h_t = o_t * tanh(C_t)
    return torch.cat([i, f, g, o], dim=1), c, h


def lstm_pointwise_backward(
    acts: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor
) -> tuple[Tensor, Tensor]:
    """Gate gradients dL/da_t (B, 4H) and dL/dC_{t-1} through the forget gate."""
    i, f, g, o = acts.chunk(4, dim=1)
    tanh_c = c.tanh()
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    do = dh * tanh_c * o * (1 - o)
    di = dc * g * i * (1 - i)
    dg = dc * i * (1 - g * g)
    df = dc * c_prev * f * (1 - f)
    return torch.cat([di, df, dg, do], dim=1), dc * f


def gru_pointwise(x_proj: Tensor, h_proj: Tensor, h_prev: Tensor) -> tuple[Tensor, Tensor]:
    """GRU step from V x_t + b_ih and W h_{t-1} + b_hh, both (B, 3H): saved values and h_t."""
    x_r, x_z, x_n = x_proj.chunk(3, dim=1)
    h_r, h_z, h_n = h_proj.chunk(3, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    h = (1 - z) * n + z * h_prev
    return torch.cat([r, z, n, h_n], dim=1), h


def gru_pointwise_backward(
    saved: Tensor, h_prev: Tensor, dh: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients wrt V x_t + b_ih (B, 3H), wrt W h_{t-1} + b_hh (B, 3H), and the direct path."""
    r, z, n, h_n = saved.chunk(4, dim=1)
    dn = dh * (1 - z) * (1 - n * n)
    dz = dh * (h_prev - n) * z * (1 - z)
    dr = dn * h_n * r * (1 - r)
    return torch.cat([dr, dz, dn], dim=1), torch.cat([dr, dz, dn * r], dim=1), dh * z


def rnn_pointwise_backward(h: Tensor, dh: Tensor, relu: bool) -> Tensor:
    return dh * (h > 0) if relu else dh * (1 - h * h)


# --------------------------------------------------------------------------- the Functions
def lstm_forward_chunk(
    xb: Tensor, h: Tensor, c: Tensor, w_t: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """K steps of the LSTM recurrence. xb: (B, K, 4H) = V x_t + b_ih + b_hh; w_t: W_hh^T.

    Returns h_t, C_t for the K steps, (K, B, H) each, and the activated gates (K, B, 4H).
    """
    hs, cs, acts = [], [], []
    for t in range(xb.shape[1]):
        act, c_new, h_new = lstm_pointwise(torch.addmm(xb[:, t], h, w_t), c)
        m = None if mask is None else mask[:, t, None]
        h, c = _keep(m, h_new, h), _keep(m, c_new, c)
        hs.append(h)
        cs.append(c)
        acts.append(act)
    return torch.stack(hs), torch.stack(cs), torch.stack(acts)


def lstm_backward_chunk(
    acts: Tensor,
    c_prev: Tensor,
    c: Tensor,
    w_hh: Tensor,
    d_output: Tensor | None,
    dh: Tensor,
    dc: Tensor,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward through K steps, last to first: gate gradients (K, B, 4H), dL/dh, dL/dC before."""
    d_gates = [None] * acts.shape[0]
    for t in reversed(range(acts.shape[0])):
        m = None if mask is None else mask[:, t, None]
        dh = _add_output_grad(dh, d_output, t, m)
        dh_new, dh_kept = _split_grad(m, dh)
        dc_new, dc_kept = _split_grad(m, dc)
        d_gates[t], dc = lstm_pointwise_backward(acts[t], c_prev[t], c[t], dh_new, dc_new)
        dh = d_gates[t] @ w_hh  # dL/dh_{t-1} = W^T da_t
        if m is not None:
            dh, dc = dh + dh_kept, dc + dc_kept
    return torch.stack(d_gates), dh, dc


#: Steps per compiled chunk: long enough to amortise the call, short enough to compile fast.
CHUNK = 20


def _chunks(steps: int) -> list[slice]:
    return [slice(t, min(t + CHUNK, steps)) for t in range(0, steps, CHUNK)]


def _mask_chunk(mask: Tensor | None, span: slice) -> Tensor | None:
    return None if mask is None else mask[:, span]


#: Tests switch this off to check the written-out maths without paying for compilation.
COMPILE_KERNELS = True
_compiled: dict = {}


def kernels(compiled: bool) -> dict:
    """The pointwise step functions, optionally compiled (once per process)."""
    eager = {
        "lstm_fwd": lstm_forward_chunk,
        "lstm_bwd": lstm_backward_chunk,
        "gru": gru_pointwise,
        "gru_bwd": gru_pointwise_backward,
        "rnn_bwd": rnn_pointwise_backward,
    }
    if not (compiled and COMPILE_KERNELS):
        return eager
    if not _compiled:
        _compiled.update({k: torch.compile(f, dynamic=False) for k, f in eager.items()})
    return _compiled


class LSTMLayer(torch.autograd.Function):
    """One direction of one LSTM layer. x_proj: (B, T, 4H) -> output (B, T, H), h_T, C_T.

    The steps run in chunks of :data:`CHUNK`; compiled, each chunk is one fused program.
    """

    @staticmethod
    def forward(ctx, x_proj, h0, c0, w_hh, b_hh, mask, compiled):
        k = kernels(compiled)
        xb = x_proj + b_hh  # (B, T, 4H): both biases added once, outside the loop
        w_t = w_hh.t()
        h, c, hs, cs, acts = h0, c0, [], [], []
        for span in _chunks(x_proj.shape[1]):
            h_k, c_k, act_k = k["lstm_fwd"](xb[:, span], h, c, w_t, _mask_chunk(mask, span))
            h, c = h_k[-1], c_k[-1]
            hs.append(h_k)
            cs.append(c_k)
            acts.append(act_k)
        hs, cs = torch.cat([h0[None], *hs]), torch.cat([c0[None], *cs])  # (T+1, B, H)
        ctx.save_for_backward(hs, cs, torch.cat(acts), w_hh, mask)
        ctx.compiled = compiled
        output = _outputs(hs, mask)
        return output, h, c

    @staticmethod
    def backward(ctx, d_output, dh, dc):
        hs, cs, acts, w_hh, mask = ctx.saved_tensors
        k = kernels(ctx.compiled)
        dh = torch.zeros_like(hs[0]) if dh is None else dh
        dc = torch.zeros_like(cs[0]) if dc is None else dc
        d_gates = []
        for span in reversed(_chunks(acts.shape[0])):
            after = slice(span.start + 1, span.stop + 1)
            d_out = None if d_output is None else d_output[:, span]
            g, dh, dc = k["lstm_bwd"](
                acts[span], cs[span], cs[after], w_hh, d_out, dh, dc, _mask_chunk(mask, span)
            )
            d_gates.append(g)
        return _weight_grads(torch.cat(d_gates[::-1]), hs[:-1], dh, dc)


class GRULayer(torch.autograd.Function):
    """One direction of one GRU layer. x_proj: (B, T, 3H) -> output (B, T, H), h_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_hh, b_hh, mask, compiled):
        k = kernels(compiled)
        hs, saved = [h0], []
        for t in range(x_proj.shape[1]):
            h_proj = torch.addmm(b_hh, hs[-1], w_hh.t())  # (B, 3H)
            s, h = k["gru"](x_proj[:, t], h_proj, hs[-1])
            hs.append(_keep(None if mask is None else mask[:, t, None], h, hs[-1]))
            saved.append(s)
        hs = torch.stack(hs)
        ctx.save_for_backward(hs, torch.stack(saved), w_hh, mask)
        ctx.compiled = compiled
        output = _outputs(hs, mask)
        return output, hs[-1]

    @staticmethod
    def backward(ctx, d_output, dh):
        hs, saved, w_hh, mask = ctx.saved_tensors
        k = kernels(ctx.compiled)
        steps, batch = saved.shape[:2]
        dh = torch.zeros_like(hs[0]) if dh is None else dh
        dx = saved.new_empty(steps, batch, w_hh.shape[0])
        dhp = torch.empty_like(dx)
        for t in reversed(range(steps)):
            m = None if mask is None else mask[:, t, None]
            dh = _add_output_grad(dh, d_output, t, m)
            dh_new, dh_kept = _split_grad(m, dh)
            dx[t], dhp[t], direct = k["gru_bwd"](saved[t], hs[t], dh_new)
            dh = direct + dhp[t] @ w_hh
            if m is not None:
                dh = dh + dh_kept
        d_w_hh = dhp.flatten(0, 1).t() @ hs[:-1].flatten(0, 1)
        return dx.transpose(0, 1), dh, d_w_hh, dhp.sum((0, 1)), None, None


class RNNLayer(torch.autograd.Function):
    """One direction of one Elman layer. x_proj: (B, T, H) -> output (B, T, H), h_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_hh, b_hh, mask, relu, compiled):
        hs = [h0]
        for t in range(x_proj.shape[1]):
            a = torch.addmm(x_proj[:, t] + b_hh, hs[-1], w_hh.t())
            h = a.relu() if relu else a.tanh()
            hs.append(_keep(None if mask is None else mask[:, t, None], h, hs[-1]))
        hs = torch.stack(hs)
        ctx.save_for_backward(hs, w_hh, mask)
        ctx.relu, ctx.compiled = relu, compiled
        output = _outputs(hs, mask)
        return output, hs[-1]

    @staticmethod
    def backward(ctx, d_output, dh):
        hs, w_hh, mask = ctx.saved_tensors
        k = kernels(ctx.compiled)
        steps = hs.shape[0] - 1
        dh = torch.zeros_like(hs[0]) if dh is None else dh
        da = torch.empty_like(hs[1:])  # (T, B, H)
        for t in reversed(range(steps)):
            m = None if mask is None else mask[:, t, None]
            dh = _add_output_grad(dh, d_output, t, m)
            dh_new, dh_kept = _split_grad(m, dh)
            da[t] = k["rnn_bwd"](hs[t + 1], dh_new, ctx.relu)
            dh = da[t] @ w_hh
            if m is not None:
                dh = dh + dh_kept
        d_w_hh = da.flatten(0, 1).t() @ hs[:-1].flatten(0, 1)
        return da.transpose(0, 1), dh, d_w_hh, da.sum((0, 1)), None, None, None


def _weight_grads(d_gates: Tensor, h_prev: Tensor, dh0: Tensor, dc0: Tensor) -> tuple:
    """LSTM: dL/dW_hh = sum_t da_t h_{t-1}^T in one product; b_hh and x_proj get da_t."""
    d_w_hh = d_gates.flatten(0, 1).t() @ h_prev.flatten(0, 1)
    return d_gates.transpose(0, 1), dh0, dc0, d_w_hh, d_gates.sum((0, 1)), None, None
