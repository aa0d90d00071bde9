"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input (a path, a value, a file's content); the message says what to do."""


class DataError(UserError):
    """A data file is missing, empty, not text, or too small for the batch layout."""


class CheckpointError(UserError):
    """A file is not a checkpoint of the expected kind."""


class PretrainedError(UserError):
    """A published model is unknown, not available locally offline, or failed to download."""
