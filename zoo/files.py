"""File helpers shared by the downloaders, the prepare commands and the hub."""

from __future__ import annotations

import uuid
from pathlib import Path


def temp_beside(path: Path) -> Path:
    """A unique hidden name in ``path``'s folder (created if missing): write there, then
    ``os.replace`` onto ``path``, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def one_line(err: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), for one-line errors."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


def download(url: str, dst: Path, progress: bool = True) -> None:
    """Fetch ``url`` into ``dst`` with torch.hub's downloader; failures are one
    :class:`~zoo.errors.DataError` line naming the URL."""
    import http.client
    from urllib.error import HTTPError, URLError

    import torch

    from zoo.errors import DataError

    try:
        torch.hub.download_url_to_file(url, str(dst), progress=progress)
    except HTTPError as err:
        raise DataError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except URLError as err:
        raise DataError(f"{url}: download failed ({err.reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise DataError(f"{url}: download failed ({one_line(err)})") from None
