"""The exceptions for what a user got wrong, which the CLI prints as one line: one hierarchy.

::

    ValueError
    └── UsageError                a bad option value, or a bad file the user named
        └── DataError             a data set, archive, image, checkpoint or run folder that is unusable
    OSError
    ├── DownloadError             a download that failed; nothing was left on disk
    └── FileNotFoundError
        └── DatasetNotFoundError  no local copy of a named data set, and no download (failed or refused)

``cutmix`` (cli.main) prints a :class:`UsageError` as ``cutmix <command>: error: <message>`` with exit
status 2 and no traceback, and so it does for every ``OSError`` (a file that cannot be read or written,
a failed download, a missing data set). Anything else is a bug and keeps its traceback: so library code
raises :class:`UsageError` only for a bad option value or a bad file that the user named, with a message
that names the option or the file and says what was expected.

A bad argument to a library function from the caller's own code (an op's ``alpha``, a loader's
``batch_size``) is a plain ``ValueError`` or ``TypeError``: the caller's bug, with its traceback. (A
comparison whose runs failed raises :class:`cutmix.experiment.runners.RunsFailedError`, a
``RuntimeError`` that the `compare` command reports itself, with each run's log.)

:class:`UsageError` subclasses ``ValueError`` so that ``except ValueError`` in callers of the library
keeps working; :class:`DownloadError` and :class:`DatasetNotFoundError` are ``OSError`` s, as a failed
read of a local file is, so that callers which handle I/O failures handle them too. They are also
importable from where they were first defined (cutmix.data.download, cutmix.data.base).
This module imports nothing, so the data layer and the library can raise them without importing the
CLI.
"""

from __future__ import annotations

__all__ = ["DataError", "DatasetNotFoundError", "DownloadError", "UsageError"]


class UsageError(ValueError):
    """A bad option value, or a bad file or data set that the user named: one line, exit status 2."""


class DataError(UsageError):
    """A data set, archive, image or run folder that the user named cannot be used as one."""


class DownloadError(OSError):
    """A download that failed; nothing was left on disk.

    An ``OSError``, as a failed read of a local file is: ``cutmix`` prints it as one line, and callers
    that already handle I/O failures handle this one too."""


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a named dataset, and it could not (or may not) be downloaded."""
