"""The `cutmix` command: thin shells over library functions (parse, call, print), ``main(argv) -> int``.

Each command group is a module that contributes itself through an ``add_parser(subparsers)`` function
setting ``func(args) -> int`` on its parser: :mod:`cutmix.cli.train` (train, evaluate, predict),
:mod:`cutmix.cli.robustness` (robustness, export), and the comparison, preview and demo commands.

Errors: a :class:`cutmix.errors.UsageError` (a bad option, or a bad file the user named) and an
``OSError`` (a file that cannot be read or written) print one line and exit with status 2; any other
exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import cutmix
from cutmix.errors import UsageError


def _subcommand_modules() -> list:
    # Imported lazily so `cutmix --version` stays fast and one broken optional dependency
    # does not take every subcommand down with it.
    from cutmix.cli import compare, demo, preview, robustness, train

    return [demo, train, compare, preview, robustness]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutmix",
        description="Per-sample CutMix / MixUp / Cutout for PyTorch, and the Keras CutMix "
        "CIFAR-10 experiment done properly.",
    )
    parser.add_argument("--version", action="version", version=f"cutmix {cutmix.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommand_modules():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    # Only what the user can fix gets one line: a plain ValueError or TypeError from our code is a bug,
    # and its traceback is what a bug report needs.
    except (UsageError, OSError) as exc:
        print(f"cutmix {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cutmix {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
