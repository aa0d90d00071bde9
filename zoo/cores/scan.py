"""The linear recurrence h_t = a_t * h_{t-1} + b_t, and minGRU / minLSTM layers built on it.

Feng et al. (2024, "Were RNNs All We Needed?") drop h_{t-1} from the gates of the GRU and LSTM,
so a layer's coefficients a_t and values b_t come from x_t alone (in one matrix product for all
steps) and what remains is a first-order linear recurrence, a scan. Their appendix computes it in
log space, h_t = exp(a*_t + logcumsumexp(log b - a*)_t), a*_t = sum_{s<=t} log a_s (that
reference is :func:`zoo.cores.minimal.log_space_scan`). On a CPU that is slow: a dozen passes
over (B, T, H) tensors for logcumsumexp, exp and log, each with its autograd twin.

Here the scan runs in linear space, where it is numerically plain: 0 < a_t <= 1 and b_t > 0, so
every h_t is a convex combination of h_0 and the values (no overflow), and a long product of
small a_t that underflows to 0 is the right answer to float precision (nothing divides by it).

* :func:`linear_scan_` overwrites the values with the states. On an accelerator it works in
  N ~ sqrt(T) chunks of C steps: a zero-start scan of all chunks at once gives each chunk's end
  value and coefficient product, a short sequential pass carries the state across the chunks,
  and a second scan of all chunks at once from their carried-in states gives every h_t: about
  2 sqrt(T) kernel launches instead of T. On a CPU it goes one step at a time: each step is one
  fused multiply-add over (B, H) that runs on one thread, while the chunked steps are large
  enough to be split across threads and then wait for them at every step (measured on 2 cores:
  no faster when the machine is idle, many times slower when it is busy; ``CHUNKED_ON_CPU``).
* :class:`MinimalScan` is one autograd Function for a whole minGRU / minLSTM layer after its
  input projections: gates, scan and their derivatives written out, so neither direction
  records a T-long graph. Its backward is the reverse recurrence (the adjoint of the scan)::

      dL/db_t = dL/dh_t + a_{t+1} dL/db_{t+1}     (dL/dh_t from the outputs and final state)
      dL/da_t = dL/db_t h_{t-1},   dL/dh_0 = a_1 dL/db_1

  run by the same :func:`linear_scan_`, right to left. On a CPU it goes through time in blocks
  of ``CPU_BLOCK_STEPS``, so that a block's dozen intermediates stay in cache (at T = 512 about
  a third faster than whole-sequence passes, which are bound by memory traffic).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Shorter sequences are scanned one step at a time (chunking would not save steps).
MIN_CHUNKED_STEPS = 16
#: Chunk the scan on a CPU too (see the module docstring); the tests switch it on.
CHUNKED_ON_CPU = False
#: Steps per time block of :class:`MinimalScan` on a CPU (B = 32, H = 256: 2 MiB per tensor).
CPU_BLOCK_STEPS = 64


def _sequential_(values: Tensor, coeffs: Tensor, initial: Tensor | None, reverse: bool) -> Tensor:
    """Step by step, in place: (B, T, H) values b_t -> states h_t."""
    h, a = values.unbind(1), coeffs.unbind(1)  # every step's view at once: no indexing per step
    previous = initial
    for t in range(len(h) - 1, -1, -1) if reverse else range(len(h)):
        if previous is not None:
            h[t].addcmul_(a[t], previous)  # h_t = b_t + a_t h_{t-1}
        previous = h[t]
    return values


def _chunked_(values: Tensor, coeffs: Tensor, initial: Tensor | None, reverse: bool) -> Tensor:
    """:func:`linear_scan_` over N chunks of C steps (the rest R < C steps one at a time)."""
    steps = values.shape[1]
    chunks = round(math.sqrt(steps))
    size = steps // chunks
    rest = steps - chunks * size
    start = rest if reverse else 0  # the rest sits at the end the scan reaches last
    b = values[:, start : start + chunks * size].unflatten(1, (chunks, size))  # (B, N, C, H)
    a = coeffs[:, start : start + chunks * size].unflatten(1, (chunks, size))
    order = range(size - 1, -1, -1) if reverse else range(size)
    first, *others = order
    # 1. every chunk from a zero state at once: its end value and its product of coefficients
    end, product = b[:, :, first].clone(), a[:, :, first].clone()  # (B, N, H)
    for c in others:
        end.mul_(a[:, :, c]).add_(b[:, :, c])
        product.mul_(a[:, :, c])
    # 2. the state entering each chunk, one chunk at a time
    carried = torch.empty_like(end)
    state = initial if initial is not None else torch.zeros_like(end[:, 0])
    for n in range(chunks - 1, -1, -1) if reverse else range(chunks):
        carried[:, n] = state
        state = torch.addcmul(end[:, n], product[:, n], state)
    # 3. every chunk again, from its carried-in state
    previous = carried
    for c in order:
        b[:, :, c].addcmul_(a[:, :, c], previous)
        previous = b[:, :, c]
    if rest:
        tail = slice(0, rest) if reverse else slice(chunks * size, steps)
        _sequential_(values[:, tail], coeffs[:, tail], state, reverse)
    return values


def linear_scan_(
    values: Tensor, coeffs: Tensor, initial: Tensor | None = None, reverse: bool = False
) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t for every t, written over ``values`` (no autograd).

    Args:
        values: ``(B, T, H)`` b_t, overwritten with h_t (a view is fine).
        coeffs: ``(B, T, H)`` a_t.
        initial: ``(B, H)`` h_0 (the state before the first step); None for zeros.
        reverse: run right to left, h_t = a_t * h_{t+1} + b_t, ``initial`` being h_{T+1}.

    Returns:
        ``values``, now the states.
    """
    chunked = CHUNKED_ON_CPU or values.device.type != "cpu"
    if chunked and values.shape[1] >= MIN_CHUNKED_STEPS:
        return _chunked_(values, coeffs, initial, reverse)
    return _sequential_(values, coeffs, initial, reverse)


def _blocks(steps: int, device: torch.device, reverse: bool = False) -> list[slice]:
    """Time blocks of :data:`CPU_BLOCK_STEPS` on a CPU (one block on an accelerator)."""
    size = CPU_BLOCK_STEPS if device.type == "cpu" else steps
    blocks = [slice(start, min(start + size, steps)) for start in range(0, steps, size)]
    return blocks[::-1] if reverse else blocks


def _gates_(first, candidate, second, coeff, g, values) -> None:
    """Logits ``(B, t, H)`` -> coefficients a_t, candidates g(h~_t) and values b_t, written into
    ``coeff``, ``g`` and ``values`` (no autograd).

    minGRU (``second`` None; ``first`` = k, the update gate's logit): a_t = 1 - z_t = sigmoid(-k).
    minLSTM (``first``, ``second`` = k_f, k_i): a_t = f_t / (f_t + i_t) = sigmoid(log f - log i),
    with log sigmoid(k) = min(k, 0) + log sigmoid(|k|): sigmoid(|k|) lies in [1/2, 1), so nothing
    underflows, and one log serves both gates (``F.logsigmoid`` is several times slower on a CPU).
    Both: b_t = (1 - a_t) g(h~_t) with g(x) = x + 1/2 for x >= 0, sigmoid(x) below, written as
    relu(x) + sigmoid(min(x, 0)) (sigmoid(0) = 1/2), the positive candidate of the appendix.
    """
    if second is None:
        torch.neg(first, out=coeff).sigmoid_()
    else:
        torch.abs(first, out=coeff).sigmoid_().div_(second.abs().sigmoid_()).log_()
        coeff.add_(first.clamp(max=0)).sub_(second.clamp(max=0)).sigmoid_()
    torch.clamp(candidate, min=0, out=g)
    g.add_(torch.clamp(candidate, max=0, out=values).sigmoid_())  # g(h~_t) > 0
    torch.addcmul(g, coeff, g, value=-1, out=values)  # b_t = (1 - a_t) g(h~_t)


def _logit_grads_(first, second, a, g, h_prev, grad_b, grads) -> None:
    """One block's gradients from dL/db_t ``(B, t, H)`` (overwritten), into ``grads`` (views of
    dL/d first, dL/d candidate, dL/d second)."""
    weighted = grad_b.addcmul_(a, grad_b, value=-1)  # (1 - a_t) dL/db_t, zero past the end
    # a_t = sigmoid(-k_t), k_t the update gate's logit (minGRU) or log i_t - log f_t
    # (minLSTM): da_t/dk = -a_t (1 - a_t), db_t/dk = a_t (1 - a_t) g(h~_t), so
    # dL/dk = a_t (1 - a_t) dL/db_t (g(h~_t) - h_{t-1}).
    grad_k = grads[0] if second is None else torch.empty_like(a)
    torch.sub(g, h_prev, out=grad_k).mul_(a).mul_(weighted)
    if second is not None:  # d(log i - log f)/dk_f = sigmoid(k_f) - 1, d/dk_i = 1 - sigmoid(k_i)
        torch.sigmoid(first, out=grads[0]).sub_(1.0).mul_(grad_k)
        torch.addcmul(grad_k, grad_k, torch.sigmoid(second, out=grads[2]), value=-1, out=grads[2])
    # dL/dh~_t = (1 - a_t) dL/db_t g'(h~_t): g' = 1 for h~ >= 0 (where g >= 1/2), g (1 - g)
    # <= 1/4 below it, so g' = max(g (1 - g), [g >= 1/2]) (masked_fill_ is slower).
    slope = torch.addcmul(g, g, g, value=-1)
    torch.maximum(slope, torch.ge(g, 0.5, out=torch.empty_like(g)), out=slope)
    torch.mul(weighted, slope, out=grads[1])


class MinimalScan(torch.autograd.Function):
    """One minGRU / minLSTM layer after its input projections, forward and backward by hand.

    ``apply(first, candidate, second, h0, keep)``: the gate and candidate logits, each
    ``(B, T, H)`` (see :func:`_gates_`; ``second`` None for minGRU), ``h0`` ``(B, H)``, ``keep``
    ``(B, T, 1)``: 1.0 at valid steps, 0.0 past a sequence's end, or None. Returns every state
    ``(B, T, H)``; past a sequence's end the coefficient is 1 and the value 0, so the state
    stands still and ``h[:, -1]`` is each sequence's final state.

    On a CPU both directions go through time in blocks of :data:`CPU_BLOCK_STEPS`: gates, scan
    and gradients of one block, then the next, so that a block's intermediates stay in cache.
    """

    @staticmethod
    def forward(ctx, first, candidate, second, h0, keep):
        coeff, g, h = (torch.empty_like(candidate) for _ in range(3))
        state = h0
        for t in _blocks(candidate.shape[1], candidate.device):
            block_second = None if second is None else second[:, t]
            _gates_(first[:, t], candidate[:, t], block_second, coeff[:, t], g[:, t], h[:, t])
            if keep is not None:  # past the end a_t = 1, b_t = 0 (masked_fill_ is slower)
                coeff[:, t].mul_(keep[:, t]).add_(1.0 - keep[:, t])
                h[:, t].mul_(keep[:, t])
            state = linear_scan_(h[:, t], coeff[:, t], state)[:, -1]
        lstm_logits = (first, second) if second is not None else (None, None)
        ctx.save_for_backward(*lstm_logits, h0, coeff, g, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        first, second, h0, a, g, h = ctx.saved_tensors
        grads = [torch.empty_like(a) for _ in range(2 if second is None else 3)]
        later = grad_h0 = None  # dL/db at the first step of the block after this one
        for t in _blocks(a.shape[1], a.device, reverse=True):
            grad_b = grad[:, t].clone(memory_format=torch.contiguous_format)  # dL/dh_t
            if later is not None:  # dL/db_t = dL/dh_t + a_{t+1} dL/db_{t+1}
                grad_b[:, -1].addcmul_(a[:, t.stop], later)
            linear_scan_(grad_b[:, :-1], a[:, t.start + 1 : t.stop], grad_b[:, -1], reverse=True)
            later = grad_b[:, 0].clone()
            if t.start == 0:
                grad_h0 = a[:, 0] * later
                h_prev = torch.cat([h0[:, None], h[:, : t.stop - 1]], dim=1)
            else:
                h_prev = h[:, t.start - 1 : t.stop - 1]
            block = [x if x is None else x[:, t] for x in (first, second, a, g)]
            _logit_grads_(*block, h_prev, grad_b, [x[:, t] for x in grads])
        grads += [None] * (3 - len(grads))
        return grads[0], grads[1], grads[2], grad_h0, None


def minimal_scan(
    first: Tensor, candidate: Tensor, second: Tensor | None, h0: Tensor, mask: Tensor | None
) -> Tensor:
    """:class:`MinimalScan`: logits ``(B, T, H)`` each, ``h0`` ``(B, H)``, ``mask`` ``(B, T, 1)``
    bool (True at valid steps) or None -> ``(B, T, H)``."""
    return MinimalScan.apply(
        first, candidate, second, h0, None if mask is None else mask.to(h0.dtype)
    )
