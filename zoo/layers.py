"""Layers the models share: dropout, attention over a source (additive, Bahdanau et al. 2014;
multiplicative, Luong et al. 2015), the bridges from an encoder to a decoder's first state, and
the CNN that turns pictures into a grid of annotation vectors.

The two attentions share one interface. The decoder's query ``(B, Q)`` scores every source annotation
``(B, S, K)``; a softmax over the valid positions gives the alignment weights ``(B, S)``, and the
context is the weighted sum of the annotations ``(B, K)``::

    attention = BahdanauAttention(query_size=1000, key_size=2000, attention_size=1000)
    projected = attention.precompute(memory)            # once per source sentence
    context, weights = attention(query, memory, mask, projected)

Masking: positions where ``mask`` is False (padding) get exactly 0 weight. A row with no valid
position at all (an empty source sentence) gets all-zero weights and a zero context, never NaN:
there is nothing to attend to, so nothing is read. Its weights therefore sum to 0, not 1.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal

import torch
import torchvision
from torch import Tensor, nn

from zoo.classpath import resolve_class
from zoo.cores import (
    RecurrentCore,
    State,
    carries_cell,
    check_dropout,
    state_from_parts,
    state_parts,
)

# Dropout draws 16-bit uniforms, four from each 64-bit random number.
_LEVELS = 1 << 16


def keep_scale(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """A CPU dropout mask of ``shape``: 0 where dropped, the rescaling where kept.

    ``torch.bernoulli_`` draws one random number per element, the cost of CPU dropout (4.7 ms for
    the 614k features of a (16, 100, 384) batch here, a fifth of the demo's bf16 training step).
    This mask takes four elements from each 64-bit draw of the default generator (``torch.randint``
    over the whole int64 range, seeded by ``torch.manual_seed``): an element is dropped when its
    16-bit uniform falls below ``round(p * 2**16)``, so the rate is ``p`` to within ``2**-17`` (a
    rate under that drops nothing), and a kept one is scaled by the inverse of the exact keep rate,
    so E[mask] = 1 exactly.
    """
    dropped = round(p * _LEVELS)
    if dropped >= _LEVELS:
        return torch.zeros(shape, dtype=dtype)
    n = math.prod(shape)
    draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    uniform = draws.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    keep = uniform >= dropped - _LEVELS // 2
    return keep.to(dtype).mul_(_LEVELS / (_LEVELS - dropped))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (Srivastava et al. 2014) whose CPU masks come from :func:`keep_scale`, about 4x
    faster to draw; elsewhere, and in place, it is ``nn.Dropout`` itself."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(check_dropout(p), inplace)  # a one-line error for the model given p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not self.p or self.inplace or x.device.type != "cpu":
            return super().forward(x)
        return x * keep_scale(x.shape, self.p, x.dtype)


class SequenceDropout(Dropout):
    """Dropout on ``(B, T, F)`` features with one mask per sequence and feature, the same at every
    time step (Gal & Ghahramani 2016; AWD-LSTM's locked dropout)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not self.p:
            return x
        keep = 1.0 - self.p
        if keep <= 0.0:  # p = 1: nothing kept (as nn.Dropout), not 0 / 0; the graph stays
            return x * 0.0
        return x * torch.empty_like(x[:, :1]).bernoulli_(keep).div_(keep)  # mask (B, 1, F)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over source positions that gives exactly 0 to masked ones.

    Args:
        scores: ``(B, S)`` unnormalised alignment scores.
        mask: ``(B, S)`` bool, True at valid source positions.

    Returns:
        ``(B, S)`` weights summing to 1 over the valid positions of each row; a row with no valid
        position is all zeros (and its gradients are zero, not NaN).
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=-1, keepdim=True)  # (B, 1)
    # An all -inf row would give 0 / 0 = NaN; score it uniformly, then zero it below.
    weights = scores.masked_fill(empty, 0.0).softmax(dim=-1)
    return weights.masked_fill(~mask, 0.0)


class Attention(nn.Module):
    """Base class: score the keys against a query, mask, normalise, average the keys.

    Subclasses implement :meth:`precompute` (the query-independent part of the score, computed
    once per source sentence) and :meth:`score`.
    """

    def precompute(self, keys: Tensor) -> Tensor:
        """Query-independent part of the score: ``(B, S, K)`` keys -> ``(B, S, *)``."""
        raise NotImplementedError

    def score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """Alignment scores: ``(B, Q)`` query and precomputed keys -> ``(B, S)``."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, projected_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend over the source annotations.

        Args:
            query: ``(B, Q)`` decoder state.
            keys: ``(B, S, K)`` source annotations, also averaged into the context.
            mask: ``(B, S)`` bool, True at valid source positions.
            projected_keys: ``precompute(keys)``, to skip recomputing it at every decoder step.

        Returns:
            ``(B, K)`` context and ``(B, S)`` weights (zero at masked positions; all zero, with a
            zero context, for a row without valid positions).
        """
        if projected_keys is None:
            projected_keys = self.precompute(keys)
        weights = masked_softmax(self.score(query, projected_keys), mask)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1).to(keys.dtype), keys).squeeze(1)  # (B, K)
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al. 2014, eq. 5-6 and appendix A.1.2).

    e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)        alignment model, A.1.2
    alpha_ij = exp(e_ij) / sum_k exp(e_ik)          eq. 6
    c_i = sum_j alpha_ij h_j                         eq. 5

    ``U_a h_j`` does not depend on the decoder step ``i``: :meth:`precompute` computes it once per
    source sentence, as A.1.2 itself suggests. Biases are omitted, as in the paper's equations.

    Args:
        query_size: size of the decoder state ``s_{i-1}``.
        key_size: size of the annotations ``h_j`` (``2n`` for a bidirectional encoder).
        attention_size: hidden size ``n'`` of the alignment model.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)  # W_a
        self.key_layer = nn.Linear(key_size, attention_size, bias=False)  # U_a
        self.energy_layer = nn.Linear(attention_size, 1, bias=False)  # v_a

    def precompute(self, keys: Tensor) -> Tensor:
        """``U_a h_j`` for every source position: ``(B, S, K) -> (B, S, A)``."""
        return self.key_layer(keys)

    def score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j): ``(B, Q), (B, S, A) -> (B, S)``."""
        hidden = torch.tanh(self.query_layer(query).unsqueeze(1) + projected_keys)  # (B, S, A)
        return self.energy_layer(hidden).squeeze(-1)


class LuongAttention(Attention):
    """Global multiplicative attention (Luong et al. 2015, eq. 7-8).

    score(h_t, h̄_s) = h_t^T h̄_s           "dot"
    score(h_t, h̄_s) = h_t^T W_a h̄_s       "general"
    a_t(s) = softmax_s(score(h_t, h̄_s))   eq. 7
    c_t = sum_s a_t(s) h̄_s                 (section 3.1)

    For "general", ``W_a h̄_s`` is independent of ``t``: :meth:`precompute` computes it once.

    Args:
        query_size: size of the decoder's top hidden state ``h_t``.
        key_size: size of the source hidden states ``h̄_s``; must equal ``query_size`` for "dot".
        score: "dot" or "general" (eq. 8; "concat" and location-based scores are not included).

    Raises:
        ValueError: ``score="dot"`` with different query and key sizes.
    """

    def __init__(
        self, query_size: int, key_size: int, score: Literal["dot", "general"] = "general"
    ) -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(
                "score='dot' needs equal query and key sizes (a decoder's hidden_size and its "
                f"encoder's output_size), got {query_size} and {key_size}; use score='general', "
                "which learns W_a"
            )
        self.score_name = score
        # W_a: (Q, K); stored as a (K -> Q) map so that it applies to the keys once.
        self.key_layer = nn.Linear(key_size, query_size, bias=False) if score == "general" else None

    def extra_repr(self) -> str:
        return f"score={self.score_name}"

    def precompute(self, keys: Tensor) -> Tensor:
        """``h̄_s`` (dot) or ``W_a h̄_s`` (general): ``(B, S, K) -> (B, S, Q)``."""
        return keys if self.key_layer is None else self.key_layer(keys)

    def score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """h_t^T (W_a) h̄_s for every ``s``: ``(B, Q), (B, S, Q) -> (B, S)``."""
        return torch.bmm(projected_keys, query.unsqueeze(-1)).squeeze(-1)


# ------------------------------------------------------------------------------ bridges
def _join_directions(state: State, num_layers: int, num_directions: int) -> tuple[Tensor, ...]:
    """Concatenate each layer's directions: every part ``(L * D, B, H) -> (L, B, D * H)``."""
    joined = []
    for part in state_parts(state):
        batch = part.shape[1]
        part = part.view(num_layers, num_directions, batch, -1).permute(0, 2, 1, 3)
        joined.append(part.reshape(num_layers, batch, -1))
    return tuple(joined)


class Bridge(nn.Module):
    """Encoder features ``(B, F)`` -> a decoder's initial state: h_0 = tanh(W_h x), c_0 = W_c x.

    tanh keeps h_0 in the range of a recurrent ``h`` (as Bahdanau et al. 2014, A.2.2:
    s_0 = tanh(W_s ←h_1)); an LSTM's cell state is unbounded, so ``c_0`` is linear. The decoder
    core turns ``(h_0, c_0)`` into its state (:meth:`RecurrentCore.state_from_bridge`).
    """

    def __init__(self, in_features: int, decoder: RecurrentCore) -> None:
        super().__init__()
        self.num_layers = decoder.num_layers
        size = decoder.num_layers * decoder.hidden_size
        self.hidden = nn.Linear(in_features, size)
        self.cell = nn.Linear(in_features, size) if carries_cell(decoder) else None
        self.state_from = type(decoder).state_from_bridge  # the class's, not the module's

    def _layers(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], self.num_layers, -1).transpose(0, 1).contiguous()  # (L, B, H)

    def forward(self, x: Tensor) -> State:
        h = self._layers(torch.tanh(self.hidden(x)))
        return self.state_from(h, None if self.cell is None else self._layers(self.cell(x)))


class FinalStateBridge(nn.Module):
    """The encoder's final state initialises the decoder (Sutskever et al. 2014, section 2).

    Encoder layer k's final state (both directions concatenated) goes to decoder layer k unchanged
    when the shapes allow it: same number of layers, encoder ``output_size`` equal to the decoder's
    ``hidden_size``, states of the same parts (both LSTMs, both sLSTMs, or both ``h`` only).
    Otherwise a :class:`Bridge` maps the final states of all layers (``h``, and ``c`` for a core
    with a cell; :meth:`RecurrentCore.bridge_parts`) to the decoder's.
    """

    def __init__(self, encoder: RecurrentCore, decoder: RecurrentCore) -> None:
        super().__init__()
        self.num_layers, self.num_directions = encoder.num_layers, encoder.num_directions
        fits = (
            encoder.num_layers == decoder.num_layers
            and encoder.output_size == decoder.hidden_size
            and encoder.state_names == decoder.state_names
        )
        in_features = (2 if carries_cell(encoder) else 1) * encoder.num_layers * encoder.output_size
        self.project = None if fits else Bridge(in_features, decoder)
        self.read = type(encoder).bridge_parts

    def forward(self, final: State) -> State:
        if self.project is None:  # every part as it is, (L, B, D * H)
            return state_from_parts(_join_directions(final, self.num_layers, self.num_directions))
        parts = _join_directions(self.read(final), self.num_layers, self.num_directions)
        x = torch.cat([part.transpose(0, 1).flatten(1) for part in parts], dim=-1)  # (B, F)
        return self.project(x)


# ------------------------------------------------------------------------ image encoder
class ImageEncoder(nn.Module):
    """A CNN that turns pictures into a grid of feature vectors ``(B, S, F)``, S = rows x cols.

    ``arch`` is a torchvision classifier name ("resnet101", "resnet50", "resnet18", ...; the
    layers before its global pooling are kept) or "small": a four-layer conv net for the tiny
    pictures of the CPU demos and tests (32x32 -> a 4x4 grid).

    Args:
        arch: torchvision model name, or "small".
        weights: torchvision weights name, e.g. "IMAGENET1K_V2" (downloaded by torchvision on the
            user's machine); None initialises randomly. Ignored for "small".
        freeze: keep the CNN fixed: no gradients, batch norm in eval mode (Vinyals et al. 2015,
            section 4.3.1, first trained with the CNN fixed; Xu et al. 2015 never fine-tune it).
        grid_size: average-pool the grid to ``grid_size x grid_size`` (Xu et al. 2015 used 14x14
            from VGG's conv5_4); None keeps the CNN's own grid.
        channels: width of the "small" net's last layer (F); its layers have F/4, F/2, F, F.
    """

    def __init__(
        self,
        arch: str = "resnet101",
        weights: str | None = None,
        freeze: bool = False,
        grid_size: int | None = None,
        channels: int = 64,
    ) -> None:
        super().__init__()
        self.arch, self.weights, self.freeze = arch, weights, freeze
        self.grid_size, self.channels = grid_size, channels
        if arch == "small":
            self.cnn, self.output_size = _small_cnn(channels), channels
        else:
            model = torchvision.models.get_model(arch, weights=weights)
            if not hasattr(model, "fc"):
                raise ValueError(f"arch {arch!r}: only ResNet-like models (with .fc) are wrapped")
            self.output_size = model.fc.in_features
            self.cnn = nn.Sequential(*list(model.children())[:-2])  # without avgpool and fc
        self.pool = nn.AdaptiveAvgPool2d(grid_size) if grid_size else nn.Identity()
        if freeze:  # eval now too: Lightning keeps the modes modules have (no .train() at fit)
            self.cnn.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.freeze:  # a fixed CNN keeps its batch-norm statistics
            self.cnn.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised pictures -> ``(B, S, F)`` grid of annotation vectors."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            features = self.pool(self.cnn(images))  # (B, F, rows, cols)
        return features.flatten(2).transpose(1, 2)  # (B, S, F)

    def config(self) -> dict[str, Any]:
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {name: getattr(self, name) for name in names},
        }


def _small_cnn(channels: int) -> nn.Sequential:
    widths = [3, max(channels // 4, 1), max(channels // 2, 1), channels, channels]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        stride = 2 if i < 3 else 1  # /8 in all: 32x32 -> 4x4
        layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


def build_encoder(config: dict[str, Any]) -> ImageEncoder:
    """Rebuild an encoder from :meth:`ImageEncoder.config`, without downloading weights (the
    checkpoint holds them)."""
    cls = resolve_class(config.get("class_path", ""), ImageEncoder)
    return cls(**{**config.get("init_args", {}), "weights": None})
