"""Published captioning models: the :mod:`zoo.hub` builder for ``captioning-*`` files.

``rnn-zoo export`` stores three keys of the training checkpoint as the file's JSON extras:
``hyper_parameters`` (the model class and the recipe's decoding settings), ``data_state`` (the
vocabulary, a list of words) and ``data_hparams`` (the data settings, ``image_size`` among them).
:func:`zoo.hub.load_pretrained` then returns the extras::

    {"vocab": Vocab, "preprocessing": {"image_size", "mean", "std"}, "decoding": {...}}

which is what :mod:`zoo.caption` needs to read pictures exactly as in training.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from zoo.hub import load_state, register_task


@register_task("captioning", extras=("hyper_parameters", "data_state", "data_hparams"))
def build_captioning(
    config: dict[str, Any], state: dict[str, Tensor], extras: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """A :class:`~zoo.models.captioning.CaptioningModel` and its vocabulary and preprocessing.

    Raises:
        KeyError, TypeError, ValueError: extras or weights that do not fit the config.
    """
    from zoo.caption import build_captioner  # here: importing zoo.hub stays light

    hparams = {**extras["hyper_parameters"], "model": config}
    captioner = build_captioner(
        hparams, state, extras["data_state"], extras["data_hparams"], load=load_state
    )
    parts = {
        "vocab": captioner.vocab,
        "preprocessing": captioner.preprocessing,
        "decoding": captioner.decoding,
    }
    return captioner.model, parts
