"""Published translation models: the :mod:`zoo.hub` builder for ``translation-*`` files.

``rnn-zoo export`` stores three keys of the training checkpoint as the file's JSON extras:
``hyper_parameters`` (the model class and the recipe's decoding settings), ``data_state`` (the
vocabularies, or the SentencePiece models as base64 bytes) and ``data_hparams`` (tokeniser,
languages, length limit). :func:`zoo.hub.load_pretrained` then returns the extras::

    {"data": ParallelTextDataModule, "decoding": {"beam_size", "length_penalty", ...}}

the data module encoding sources and detokenising outputs exactly as in training, with no corpus.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from zoo.hub import load_state, register_task


@register_task("translation", extras=("hyper_parameters", "data_state", "data_hparams"))
def build_translation(
    config: dict[str, Any], state: dict[str, Tensor], extras: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """A :class:`~zoo.models.translation.TranslationModel`, its data module and decoding settings.

    Raises:
        KeyError, TypeError, ValueError: extras or weights that do not fit the config.
    """
    from zoo.translate import build_translator  # here: importing zoo.hub stays light

    hparams = {**extras["hyper_parameters"], "model": config}
    model, data, decoding = build_translator(
        hparams,
        extras["data_state"],
        extras["data_hparams"],
        load=lambda model: load_state(model, state),
    )
    return model, {"data": data, "decoding": decoding}
