"""Corpus builders and downloaders: the small corpora shipped under ``datamodules/data`` (made from
registry packages) and the full-size data users fetch (COCO, WMT'14). ``rnn-zoo prepare`` runs
them."""

from zoo.errors import DataError


class PrepareError(DataError):
    """Bad or missing input for a prepare command; the message names the offending file."""
