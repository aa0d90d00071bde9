"""Scores: sacreBLEU's corpus BLEU and chrF for translation, and the MS-COCO caption metrics
(Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server"): BLEU-1..4,
METEOR, ROUGE-L and CIDEr-D, computed by pycocoevalcap's scorers.

pycocoevalcap tokenises with Stanford's PTBTokenizer (a Java subprocess); :func:`ptb_tokenize`
reproduces what it does to captions in pure Python, so every score but METEOR is the same with or
without Java. METEOR is Java only (``meteor-1.5.jar``): without ``java`` it is left out, with one
warning per process.
"""

from __future__ import annotations

import re
import shutil
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

# What pycocoevalcap drops from PTBTokenizer's output (tokenizer/ptbtokenizer.py). The bracket
# names are upper-case there while the tokenizer runs with -lowerCase, so "-lrb-" stays.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
     "...", ";"]
)  # fmt: skip

# Words that keep their full stop (PTBLexer.flex: ABBREV1, ABBREV2, ABBREV3; it is caseless).
_ABBREVIATIONS = frozenset(
    """jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri ala ariz
    calif colo conn dak del fla ga ind kan kans ky la md mich minn mo mont neb nev okla pa penn
    tenn tex va vt wis wisc wyo inc co cos corp pty ptys ppty pptys ltd plc bancorp dept bhd assn
    univ intl sys no nos prop ph tel est ext sq ft jr sr bros blvd rd esq etc al seq mr mrs ms dr
    drs prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt cpl pvt
    mt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det vs alex wm jos cie
    cf treas invt elec natl mfg mtg ph.d ed.d""".split()
)
# ... and the state names the lexer only takes capitalised ("the miss. river" splits).
_CAPITALISED_ABBREVIATIONS = frozenset({"Ark", "Ill", "Mass", "Miss", "Ore", "Wash"})
_ACRONYM = re.compile(r"[^\W\d_](?:\.[^\W\d_])+")  # u.s, p.m, a.k.a (the final stop follows)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_UNICODE = str.maketrans({"\u2019": "'", "\u2018": "`", "\u201c": '"', "\u201d": '"',
                          "\u2013": " -- ", "\u2014": " -- ", "\u2015": " -- ", "\u2026": " ... "})  # fmt: skip
# Splits done before lexing: clitics (dog's -> dog 's, don't -> do n't) and PTB's special words.
_SPLITS = [
    (re.compile(r"(?<=\w)(n't)\b", re.I), r" \1"),
    (re.compile(r"(?<=\w)('(?:s|m|d|re|ve|ll))\b", re.I), r" \1"),
    (re.compile(r"(?<=\w)('n')(?=\w)", re.I), r" \1 "),
    (re.compile(r"\b(can)(not)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(gon|got)(na|ta)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(y')(?=[^\W\d_])", re.I), r"\1 "),  # y'all -> y' all
]
# The tokens, first match wins (PTBLexer takes the longest; these alternatives are ordered so that
# captions come out the same).
_TOKEN = re.compile(
    r"""
      https?://\S+ | www\.\S+ | [\w.+-]+@\w+(?:\.\w+)+   # URLs, e-mail addresses
    | [#@]\w+                                          # hashtags, user names
    | </?[A-Za-z!][^>]*>                               # SGML tags, as <unk>
    | n't | '(?:s|m|d|re|ve|ll)\b | 'n' | '\d0s\b       # clitics, 'n', '90s
    | (?<!\w)[yY]'(?!\S)                               # y' (of y'all)
    | [A-Z]+(?:[+&][A-Z]+)+                            # AT&T, S+P
    | \d+(?:[.,:]\d+)+ | (?<!\w)[-+]\d+(?:[.,:]\d+)*    # 1,000  10:30  3.5  -5
    | \w+(?:[-./]\w+|'[^\W\d_]+)*                      # words: black-and-white o'clock a/b
    | \.{2,} | -{2,} | [?!]+                           # ellipses, dashes, ?! runs
    | \S                                               # any other character
    """,
    re.X,
)


def _keeps_stop(word: str) -> bool:
    """Whether PTBTokenizer keeps the full stop after ``word`` as part of it (an abbreviation)."""
    lower = word.lower()
    return (
        (len(word) == 1 and word.isalpha())
        or lower in _ABBREVIATIONS
        or word in _CAPITALISED_ABBREVIATIONS
        or _ACRONYM.fullmatch(word) is not None
    )


def ptb_tokenize(caption: str) -> list[str]:
    """Tokens of ``caption`` as pycocoevalcap's ``PTBTokenizer`` gives them, without Java.

    That is Stanford's PTBTokenizer (CoreNLP 3.4.1, ``-preserveLines -lowerCase``) followed by
    dropping :data:`PUNCTUATIONS`: lower case, clitics split (``dog 's``, ``do n't``), brackets
    as ``-lrb-`` ..., quotes, full stops, commas and dashes dropped, abbreviations (``st.``,
    ``u.s.``), numbers (``1,000``) and hyphenated words kept whole. It matches the Java output
    on captions (see the tests), not on every odd string the Java lexer knows about.
    """
    text = caption.replace("\n", " ").translate(_UNICODE)
    for pattern, replacement in _SPLITS:
        text = pattern.sub(replacement, text)
    tokens: list[str] = []
    joined = -1  # where a stop joined to the abbreviation before it ends
    for match in _TOKEN.finditer(text):
        if match.start() < joined:
            continue
        token, end = match.group(), match.end()
        # A stop after an abbreviation belongs to it, unless it starts an ellipsis.
        if text[end : end + 1] == "." and text[end + 1 : end + 2] != "." and _keeps_stop(token):
            token, joined = token + ".", end + 1
        tokens.append(token)
    return [t for t in (_normalise(t) for t in tokens) if t not in PUNCTUATIONS]


def _normalise(token: str) -> str:
    if token in _BRACKETS:
        return _BRACKETS[token]
    if token == '"':
        return "''"  # PTB quotes: `` or '', both dropped
    if token.startswith(".."):
        return "..."
    if token.startswith("--"):
        return "--"
    return token.lower()


# --------------------------------------------------------------------------------- scores
_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _close_meteor(meteor) -> None:
    """Ends the Java process of a pycocoevalcap ``Meteor`` at once.

    Its ``__del__`` does the same under its lock, but a ``compute_score`` that failed midway
    leaves that lock held (garbage collection would then hang), so the lock is replaced too.
    """
    process = meteor.meteor_p
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None and not stream.closed:
            try:
                stream.close()
            except OSError:  # the pipe broke when Java died
                pass
    process.kill()
    process.wait()
    meteor.lock = threading.Lock()


def meteor_score(gts: Mapping[int, list[str]], res: Mapping[int, list[str]]) -> float | None:
    """pycocoevalcap's METEOR 1.5 of tokenised captions; None (and one warning per process)
    where Java is missing or the scorer fails. The Java process is always ended."""
    if shutil.which("java") is None:
        _warn_once("java not found: METEOR is left out of the caption scores")
        return None
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        meteor = Meteor()
    except OSError as err:
        _warn_once(f"METEOR did not start ({err}): it is left out of the caption scores")
        return None
    try:
        score, _ = meteor.compute_score(gts, res)
        return float(score)
    except (OSError, ValueError) as err:  # a broken pipe, or no number from a dead process
        _warn_once(f"METEOR failed ({err!r}): it is left out of the caption scores")
        return None
    finally:
        _close_meteor(meteor)


def score_captions(
    references: Mapping[int, Sequence[str]],
    hypotheses: Mapping[int, str],
    meteor: bool | None = None,
) -> dict[str, float]:
    """The COCO caption scores of one caption per image against that image's references.

    Both sides go through :func:`ptb_tokenize` (as the COCO evaluation server's PTBTokenizer),
    then pycocoevalcap's ``Bleu(4)`` (corpus BLEU, "closest" reference length), ``Meteor``,
    ``Rouge`` (ROUGE-L, mean over images) and ``Cider`` (CIDEr-D: document frequencies from
    these references, so it depends on the whole set scored). An empty caption scores 0.

    Args:
        references: image id -> its reference captions, as written (at least one each).
        hypotheses: image id -> the generated caption; every id must have references.
        meteor: score METEOR (Java); None: where ``java`` is found. Without Java, or if the
            scorer fails, METEOR is left out with one warning per process.

    Returns:
        ``bleu1`` .. ``bleu4``, ``meteor`` (when scored), ``rouge_l``, ``cider``; BLEU, METEOR and
        ROUGE-L in [0, 1], CIDEr-D in [0, 10]. Empty ``hypotheses``: every score 0.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    missing = [i for i in hypotheses if not references.get(i)]
    if missing:
        raise ValueError(f"no reference captions for image ids {missing[:5]}")
    if meteor is None:
        meteor = shutil.which("java") is not None
    ids = sorted(hypotheses)
    if not ids:
        return {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0, "rouge_l": 0.0,
                "cider": 0.0} | ({"meteor": 0.0} if meteor else {})  # fmt: skip
    gts = {i: [" ".join(ptb_tokenize(r)) for r in references[i]] for i in ids}
    res = {i: [" ".join(ptb_tokenize(hypotheses[i]))] for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n}": float(b) for n, b in enumerate(bleu, start=1)}
    if meteor and (value := meteor_score(gts, res)) is not None:
        scores["meteor"] = value
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = float(Cider().compute_score(gts, res)[0])
    return scores


def score_corpus(
    hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False
) -> tuple[Any, Any, str]:
    """sacreBLEU's corpus BLEU and chrF of detokenised text (default settings: 13a tokenisation,
    exp smoothing; chrF with n=6, beta=2), and the two signatures as one line."""
    bleu, chrf = BLEU(lowercase=lowercase), CHRF(lowercase=lowercase)
    refs = [list(references)]
    bleu_score, chrf_score = (
        bleu.corpus_score(hypotheses, refs),
        chrf.corpus_score(hypotheses, refs),
    )
    return bleu_score, chrf_score, f"BLEU {bleu.get_signature()} | chrF {chrf.get_signature()}"
