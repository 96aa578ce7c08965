"""Verified downloads: stream a URL into the destination's folder, check its MD5, then publish it.

The destination either appears complete and verified, or not at all: a checksum mismatch, a
transfer cut short, a full disk or a dead network leave neither the temporary file nor ``dest``
behind, and raise :class:`DownloadError` naming the URL and the file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from cutmix.errors import DownloadError
from cutmix.runinfo import atomic_file

__all__ = ["DownloadError", "download_file", "md5sum"]

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """Hex MD5 digest of the file at ``path``, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    md5: str,
    timeout: float = 10.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5 digest ``md5`` (hex, any case).

    If ``dest`` already exists with the right digest it is returned untouched. ``timeout`` is
    the socket timeout in seconds for connecting and for each read, so a dead host fails within
    about that long. ``progress`` shows a tqdm bar on stderr.

    Returns ``Path(dest)``. Raises :class:`DownloadError` on any failure (network error, HTTP
    error, truncated transfer, checksum mismatch, write error); in every case neither ``dest``
    nor a temporary file remains.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot write {dest} (for {url}): {exc}") from exc
    try:
        # Published only if the digest matches: atomic_file renames (and fsyncs) only when the
        # block ends without an exception, and removes the .part file otherwise (Ctrl-C too).
        with atomic_file(dest, suffix=".part") as out:
            digest = _fetch(url, out, timeout, progress, dest.name)
            if digest != md5:
                raise DownloadError(
                    f"checksum mismatch for {url}: expected md5 {md5}, got {digest}; "
                    f"the file was discarded, not saved as {dest}"
                )
    except DownloadError:
        raise
    except Exception as exc:
        # _fetch turns every network failure into DownloadError, so what is left is local I/O.
        raise DownloadError(f"cannot write {dest} (downloading {url}): {exc}") from exc
    return dest


def _fetch(url: str, out: BinaryIO, timeout: float, progress: bool, label: str) -> str:
    """Stream ``url`` into the open binary file ``out``; return the hex MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, refused, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}") from exc
    with response:
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        received = 0
        with tqdm(
            total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(
                        f"download of {url} interrupted after {received} bytes: {exc!r}"
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client returns b"" rather than raising when the server closes early, so the
    # announced length is the only evidence of a cut-off transfer.
    if expected is not None and received != expected:
        raise DownloadError(
            f"download of {url} truncated: got {received} of {expected} announced bytes "
            "(connection closed early)"
        )
    return digest.hexdigest()
