"""Tests for zoo.caption_metrics: scores against hand-checked values and sacreBLEU, the pure-Python
tokeniser against pycocoevalcap's Java PTBTokenizer, METEOR without Java."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import warnings

import pytest

import zoo.metrics as caption_metrics
from zoo.metrics import ptb_tokenize, score_captions

CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    'A dog\'s ball, (red) and "blue" -- on the grass!',
    "Two people don't like the black-and-white T.V.?",
    "A cat; sitting: on a 3.5 ft. table... with $5 & 10% off",
    "A bowl of fruit: apples, oranges and bananas.",
    "There's a cat on the couch and it's sleeping.",
    "The people are at the St. Patrick's Day parade in the U.S.",
    "A 3-year-old girl holding 1,000 balloons at 10:30 a.m.",
    "A sign that says \u201cNo Parking\u201d \u2014 in red.",
    "a man is doing tricks on a skateboard .",
    "the boys' toys and the '90s car; rock'n'roll cannot stop",
    "What?! A bike parked next to a pole w/ a sign [left] {right}",
    "a <unk> sitting on a <unk> .",
]


@pytest.fixture
def no_meteor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast scoring: METEOR starts a Java process that loads for seconds."""
    monkeypatch.setattr(caption_metrics, "meteor_score", lambda gts, res: None)


def test_tokenizer_on_captions() -> None:
    assert ptb_tokenize('A dog\'s ball, (red) and "blue" -- on the grass!') == (
        "a dog 's ball -lrb- red -rrb- and blue on the grass".split()
    )
    assert ptb_tokenize("Mr. Smith doesn't live in the U.S. at 5 p.m.") == (
        "mr. smith does n't live in the u.s. at 5 p.m.".split()
    )
    assert ptb_tokenize("1,000 people... at 10:30; a 3-D movie.") == (
        "1,000 people at 10:30 a 3-d movie".split()
    )
    assert ptb_tokenize("") == [] and ptb_tokenize(" . , !") == []


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java for PTBTokenizer")
def test_tokenizer_matches_pycocoevalcap_ptb_tokenizer() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(CAPTIONS)})
    for i, caption in enumerate(CAPTIONS):
        assert " ".join(ptb_tokenize(caption)) == java[i][0], caption


def test_bleu_by_hand(no_meteor) -> None:
    ref = "a red circle on the left"
    scores = score_captions({1: [ref, "x y"]}, {1: ref})
    assert [scores[f"bleu{n}"] for n in range(1, 5)] == pytest.approx([1.0] * 4)
    assert scores["rouge_l"] == pytest.approx(1.0)
    # Clipping: "a a a a" matches "a" once; no bigram matches (BLEU-2 is ~1e-5: pycocoevalcap's
    # epsilons keep the geometric mean from being 0).
    scores = score_captions({1: ["a b c d"]}, {1: "a a a a"})
    assert scores["bleu1"] == pytest.approx(0.25) and scores["bleu2"] < 1e-4
    # Brevity penalty from the closest reference length: 3 words against 6 -> exp(1 - 2).
    scores = score_captions({1: [ref]}, {1: "A red circle."})
    assert scores["bleu1"] == pytest.approx(math.exp(-1))
    # Tokenised alike on both sides: case and punctuation do not count.
    assert score_captions({1: ["A Red circle, on the left."]}, {1: ref})["bleu4"] == (
        pytest.approx(1.0)
    )


def test_bleu_matches_sacrebleu_on_a_corpus(no_meteor) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps = ["a red circle on the right", "a blue square in the middle of the picture"]
    refs = ["a red circle on the left", "a blue square in the middle"]
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score
    scores = score_captions({i: [r] for i, r in enumerate(refs)}, dict(enumerate(hyps)))
    assert 100 * scores["bleu4"] == pytest.approx(expected, rel=1e-6)
    # ... and a mean of per-sentence scores is not the corpus score.
    alone = [score_captions({0: [r]}, {0: h})["bleu4"] for h, r in zip(hyps, refs)]
    assert abs(sum(alone) / 2 - scores["bleu4"]) > 0.01


def test_cider_d_identical_versus_different(no_meteor) -> None:
    refs = {
        1: ["a red circle on the left", "a red circle left of the centre"],
        2: ["a blue square in the middle", "there is a blue square in the middle"],
        3: ["two green triangles at the top", "green triangles at the top of the picture"],
    }
    same = score_captions(refs, {i: r[0] for i, r in refs.items()})
    # Each hypothesis equals one of two references: cosine 1 with it, less with the other.
    assert 5.0 < same["cider"] <= 10.0
    perfect = score_captions(
        {i: [r[0]] for i, r in refs.items()}, {i: r[0] for i, r in refs.items()}
    )
    assert perfect["cider"] == pytest.approx(10.0)  # CIDEr-D's x10, cosine 1 at every n
    swapped = score_captions(refs, {1: refs[2][0], 2: refs[3][0], 3: refs[1][0]})
    assert swapped["cider"] < 0.5 < same["cider"]
    # One picture alone: every n-gram occurs in all (one) documents, idf 0, CIDEr-D 0.
    assert score_captions({1: refs[1]}, {1: refs[1][0]})["cider"] == 0.0


def test_empty_captions_score_zero(no_meteor) -> None:
    refs = {1: ["a red circle"], 2: ["a blue square"], 3: ["a green triangle"]}
    scores = score_captions(refs, {1: "", 2: "", 3: ""})
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in scores.values()), scores
    mixed = score_captions(refs, {1: "a red circle", 2: "", 3: "a green triangle"})
    assert mixed["rouge_l"] == pytest.approx(2 / 3)
    assert score_captions(refs, {})["bleu4"] == 0.0
    with pytest.raises(ValueError, match="no reference"):
        score_captions(refs, {4: "a dog"})


def test_meteor_left_out_with_one_warning_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    monkeypatch.setattr(caption_metrics, "_warned", False)
    refs, hyps = {1: ["a red circle"]}, {1: "a red circle"}
    with pytest.warns(RuntimeWarning, match="java not found"):
        scores = score_captions(refs, hyps, meteor=True)
    assert "meteor" not in scores and scores["bleu1"] == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "meteor" not in score_captions(refs, hyps, meteor=True)  # warned once
        assert "meteor" not in score_captions(refs, hyps)  # None: only where java is


class _DeadMeteor:
    """A Meteor whose Java process (here ``sleep``) gives no number back."""

    def __init__(self) -> None:
        self.meteor_p = subprocess.Popen(
            ["sleep", "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lock = threading.Lock()
        _DeadMeteor.last = self

    def compute_score(self, gts, res):
        self.lock.acquire()  # as pycocoevalcap's, which never releases it on errors
        return float(b"")


def test_failing_meteor_warns_and_ends_its_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import pycocoevalcap.meteor.meteor as meteor_module

    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(meteor_module, "Meteor", _DeadMeteor)
    monkeypatch.setattr(caption_metrics, "_warned", False)
    with pytest.warns(RuntimeWarning, match="METEOR failed"):
        scores = score_captions({1: ["a red circle"]}, {1: "a red circle"}, meteor=True)
    assert "meteor" not in scores and "cider" in scores
    process = _DeadMeteor.last.meteor_p
    assert process.poll() is not None  # killed, not left running
    assert _DeadMeteor.last.lock.acquire(timeout=1)  # garbage collection would not hang


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
def test_meteor_with_java_ends_its_process() -> None:
    """METEOR 1.5 (Java; seconds to start): identical captions 1, the process gone after."""
    refs = {1: ["a red circle on the left"], 2: ["a blue square in the middle"]}
    scores = score_captions(refs, {1: "a red circle on the left", 2: ""}, meteor=True)
    assert 0.4 < scores["meteor"] < 0.6  # the mean of about 1 and 0
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True)
    assert children.stdout.strip() == "", "a METEOR java process was left running"
