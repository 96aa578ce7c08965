"""Provenance and safe files: what every run and report records, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

import cutmix
from cutmix.errors import UsageError


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout holding this package (with ``+dirty`` if it has changes), or None."""
    where = path or Path(cutmix.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def hardware(device: torch.device | str | None = None) -> dict[str, Any]:
    """The machine a run ran on: CPU, its SIMD level, threads, and the GPU where one is used."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # The SIMD kernels torch picked (AVX2, AVX512, ...): float results differ between levels,
        # so bit-for-bit comparisons hold between runs that record the same one.
        "cpu_capability": cpu_capability(),
    }
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["gpu_count"] = torch.cuda.device_count()
    return info


def cpu_capability() -> str | None:
    """``torch.backends.cpu.get_cpu_capability()`` ("AVX2", "AVX512", "NO AVX", ...), or None
    where this torch cannot say."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device | str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """The command, versions, hardware and git commit, for config files and reports."""
    import numpy

    return {
        "command": " ".join(["cutmix", *argv]) if argv is not None else " ".join(sys.argv),
        "versions": {
            "cutmix": cutmix.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        "hardware": hardware(device),
        "git_commit": git_commit(),
    }


@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: it appears complete, or not at all.

    The data goes to a temporary file in the same folder (so the rename is atomic on one file
    system), created with mode ``0o666`` so that the kernel applies the umask as for any new file
    (``tempfile.mkstemp`` would make it ``0o600``). On leaving the block without an exception: flush,
    fsync the file, rename it over ``path``, fsync the folder, so that after a power loss ``path`` is
    either the old file or the whole new one, never empty or missing. On an exception (Ctrl-C too)
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temporary(path, suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def _create_temporary(path: Path, suffix: str) -> tuple[Path, int]:
    """A new file ``.<name>.<random><suffix>`` beside ``path``, opened for writing: (its path, fd)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:  # a name another writer drew: draw again
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def fsync_folder(folder: str | Path) -> None:
    """Makes the folder's entries (a rename into it) durable. Windows cannot open a folder for this,
    and some file systems refuse fsync on folders: there the rename is as durable as they make it."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` through :func:`atomic_file`: a reader never sees half a file, and
    a crash or power loss leaves the old one."""
    with atomic_file(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# The picture formats cutmix writes, by file suffix (no suffix: PNG, as before suffixes counted),
# and how each one's bytes begin, so that an existing file can be told to be one of ours.
PICTURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}
_SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "pdf": (b"%PDF-",),
               "svg": (b"<?xml", b"<svg")}  # fmt: skip


def picture_format(path: str | Path) -> str:
    """The format a picture at ``path`` is written in, from its suffix (case-insensitive); a
    :class:`UsageError` naming ``--out`` for a suffix cutmix cannot write."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "png"
    if suffix not in PICTURE_FORMATS:
        raise UsageError(
            f"--out: expected a picture file ending in {', '.join(PICTURE_FORMATS)}, got {str(path)!r}"
        )
    return PICTURE_FORMATS[suffix]


def is_picture_file(path: str | Path) -> bool:
    """Whether the file at ``path`` begins as a picture cutmix writes (PNG, JPEG, PDF or SVG) does."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    return any(head.startswith(s) for signatures in _SIGNATURES.values() for s in signatures)


def check_picture_out(path: str | Path, force: bool = False) -> Path:
    """Checks ``--out`` for a picture before anything is computed: its suffix must be one cutmix
    writes, it must not be a folder, and an existing file is replaced only if it is a picture (one
    cutmix could have written) or with ``force``: a user's other file is never overwritten unasked."""
    path = Path(path)
    picture_format(path)
    if path.is_dir():
        raise UsageError(f"--out: expected a picture file name, got the folder {str(path)!r}")
    if path.exists() and not force and not is_picture_file(path):
        raise UsageError(
            f"--out: {str(path)!r} exists and is not a picture cutmix wrote (not PNG, JPEG, PDF or SVG "
            "data); refusing to overwrite it: pass --force to replace it, or choose another --out"
        )
    return path


def atomic_save_figure(fig: Any, path: str | Path, dpi: int = 90) -> Path:
    """Saves a matplotlib figure through :func:`atomic_file`, in the format of ``path``'s suffix
    (:func:`picture_format`: PNG without one)."""
    image_format = picture_format(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format, dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through :func:`atomic_file` (fsynced, then renamed)."""
    with atomic_file(path) as handle:
        torch.save(obj, handle)
    return Path(path)
