"""The translation loss: ``chunked_loss`` (torch's chunked linear_cross_entropy on the models'
``features``) gives the loss and the gradients of the plain head + cross-entropy."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import torch

from datamodules.pairs import Batch
from zoo.cores import GRU, LSTM
from zoo.errors import UserError
from zoo.models.translation import LuongNMT, RNNSearch, Seq2Seq
from zoo.tasks.translation import TranslationTask

PAD, BOS = 0, 1
SRC_VOCAB, TGT_VOCAB = 11, 29
MODELS = {
    "seq2seq": partial(Seq2Seq, embedding_dim=5, encoder=partial(LSTM, hidden_size=6),
                       decoder=partial(LSTM, hidden_size=6)),
    "rnnsearch": partial(RNNSearch, embedding_dim=5, attention_size=6, maxout_size=4,
                         encoder=partial(GRU, hidden_size=5, bidirectional=True),
                         decoder=partial(GRU, hidden_size=7)),
    "luong": partial(LuongNMT, embedding_dim=5, encoder=partial(LSTM, hidden_size=6),
                     decoder=partial(LSTM, hidden_size=6)),
}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


def padded_batch(seed: int = 3) -> Batch:
    """Four pairs of different lengths; target padding (PAD) past each length."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, SRC_VOCAB, (4, 7), generator=g)
    src_lengths = torch.tensor([7, 3, 5, 1])
    tgt = torch.randint(3, TGT_VOCAB, (4, 9), generator=g)
    tgt_lengths = torch.tensor([9, 2, 6, 4])
    tgt[torch.arange(9) >= tgt_lengths[:, None]] = PAD
    tgt_in = torch.cat([torch.full((4, 1), BOS), tgt[:, :-1]], dim=1)
    return Batch(src, src_lengths, tgt_in, tgt, torch.arange(4))


def task(model: str, chunked: bool, **kwargs) -> TranslationTask:
    torch.manual_seed(0)
    return TranslationTask(
        SRC_VOCAB, TGT_VOCAB, model=MODELS[model], chunked_loss=chunked, **kwargs
    ).double()


@pytest.mark.parametrize("model", MODELS)
def test_chunked_loss_gives_the_loss_and_gradients_of_the_plain_one(model):
    batch, results = padded_batch(), []
    for chunked in (False, True):
        t = task(model, chunked).train()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch warns when it falls back to the plain path
            loss, tokens = t._nll(batch)
        loss.backward()
        results.append((loss.detach(), tokens, {n: p.grad for n, p in t.named_parameters()}))
    (plain, tokens, grads), (fused, fused_tokens, fused_grads) = results
    assert int(tokens) == int(fused_tokens) == 9 + 2 + 6 + 4  # padding is not counted
    assert plain.item() > 0
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=0)
    assert grads.keys() == fused_grads.keys()
    for name, grad in grads.items():
        assert grad is not None and fused_grads[name] is not None, name
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-10, atol=1e-14, msg=name)


def test_the_plain_loss_is_the_mean_nll_of_the_unpadded_tokens():
    batch, t = padded_batch(), task("luong", chunked=True).eval()
    with torch.no_grad():
        loss, _ = t._nll(batch)  # evaluation: no gradients, so the plain path
        log_p = t.model(batch.src, batch.src_lengths, batch.tgt_in).log_softmax(-1)
    nll = -log_p.gather(-1, batch.tgt_out[..., None])[..., 0]
    torch.testing.assert_close(loss, nll[batch.tgt_out != PAD].mean())


def test_chunked_loss_refuses_label_smoothing():
    with pytest.raises(UserError, match=r"chunked_loss has no label smoothing.*not 0.1"):
        task("seq2seq", chunked=True, label_smoothing=0.1)
