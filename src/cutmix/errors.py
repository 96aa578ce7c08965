"""The exception for what a user got wrong, which the CLI prints as one line.

``cutmix`` (cli.main) prints a :class:`UsageError` as ``cutmix <command>: error: <message>`` with exit
status 2 and no traceback, and so it does for ``OSError`` (a file that cannot be read or written).
Anything else is a bug and keeps its traceback: so library code raises :class:`UsageError` only for
a bad option value or a bad file that the user named, with a message that names the option or the
file and says what was expected.

It subclasses ``ValueError`` so that ``except ValueError`` in callers of the library keeps working.
This module imports nothing, so the data layer and the library can raise it without importing the
CLI.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad option value, or a bad file or data set that the user named: one line, exit status 2."""


class DataError(UsageError):
    """A data set, archive, image or run folder that the user named cannot be used as one."""
