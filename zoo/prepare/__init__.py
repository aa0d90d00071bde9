"""Commands that turn registry packages into the small corpora shipped under ``zoo/data``."""


class PrepareError(RuntimeError):
    """Bad or missing input for a prepare command; the message names the offending file."""
