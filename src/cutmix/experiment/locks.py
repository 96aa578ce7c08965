"""The lock files of a comparison: one per run folder while a run trains in it, and one on ``--out``
for the whole life of the comparison using it.

Each is an exclusive, non-blocking ``flock`` on ``<folder>/.lock`` holding the owner's process id:
released on exit, and by the kernel when the process dies (even by SIGKILL), so a stale file never
blocks anyone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cutmix.errors import UsageError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Holds an exclusive lock on ``run_dir`` while a run trains in it: a second process (another
    comparison on the same --out, or an orphan) is refused instead of writing the same files."""
    run_dir = Path(run_dir)

    def refusal(owner: str) -> str:
        return (f"{run_dir}: expected a run folder no other process is training, but process {owner} "
                "holds its lock; wait for it to finish or stop it")  # fmt: skip

    with _folder_lock(run_dir, refusal):
        yield


@contextlib.contextmanager
def comparison_lock(out: str | Path) -> Iterator[None]:
    """Held by `cutmix compare` on its ``--out`` for its whole life: the runs waiting in its queue
    hold no lock of their own, so a second comparison (with ``--force`` or not) must be refused
    at the folder, before it inspects, deletes or trains any run there."""
    out = Path(out)

    def refusal(owner: str) -> str:
        return (f"--out: expected a comparison folder no other comparison is using, but process {owner} "
                f"holds the lock of {out} (--force does not override this); wait for it to finish or "
                "stop it")  # fmt: skip

    with _folder_lock(out, refusal):
        yield


@contextlib.contextmanager
def _folder_lock(folder: Path, refusal: Any) -> Iterator[None]:
    """An exclusive, non-blocking ``flock`` on ``folder``/.lock holding this process's id; a
    :class:`UsageError` of ``refusal(owner)`` when another process holds it. Released on exit, and by
    the kernel when the process dies (even by SIGKILL), so a stale file never blocks anyone."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, no protection
        yield
        return
    with open(folder / LOCK_NAME, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise UsageError(refusal(owner)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
