"""`cutmix train`, `cutmix evaluate` and `cutmix predict`: thin shells over
:func:`cutmix.training.loop.train`, :func:`cutmix.training.evaluate.evaluate_checkpoint` and
:func:`cutmix.training.evaluate.iter_predictions` (parse, call, print, return the exit status)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from cutmix.errors import UsageError
from cutmix.training.checkpoint import is_run_folder
from cutmix.training.config import RECIPE_HELP, add_train_options, config_from_args
from cutmix.training.evaluate import evaluate_checkpoint, iter_predictions
from cutmix.training.loop import train
from cutmix.training.preemption import TrainingInterrupted, stop_on_signals


def check_resume(out: Path) -> None:
    """``--resume`` continues a run: a folder that does not exist or holds no run of ours is a
    mistyped path, refused rather than silently trained from scratch. A run of ours stopped before
    its first checkpoint has nothing to resume from, and starts from the beginning, saying so."""
    if (out / "checkpoint.pt").is_file():
        return
    if not out.exists():
        raise UsageError(
            f"--resume: {str(out)!r} does not exist, so there is no run to resume; "
            "check --out, or drop --resume to start a new run"
        )
    if not is_run_folder(out):
        raise UsageError(
            f"--resume: {str(out)!r} holds no run to resume (no checkpoint.pt, no config.json of a "
            "cutmix run); check --out, or drop --resume to start a new run"
        )
    if os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(f"note: {out} holds no checkpoint yet (the run stopped in its first epoch): starting afresh")


def resume_command(argv: list[str]) -> str:
    """The command line that resumes the run ``argv`` (``train ...``) started: the same options,
    ``--resume`` instead of ``--force``."""
    kept = [a for a in argv if a not in ("--force", "--resume")]
    return shlex.join(["cutmix", *kept, "--resume"])


def run_train(args: argparse.Namespace) -> int:
    """`cutmix train ARGS`; the exit status: 0, 3 (diverged with --stop-on-divergence), or on
    SIGTERM/SIGUSR2 128 + the signal's number once the checkpoint within the epoch is saved."""
    config = config_from_args(args)
    if args.resume:
        check_resume(Path(args.out))
    argv = sys.argv[1:] if sys.argv[1:2] == ["train"] else ["train", "...", "--out", args.out]
    try:
        with stop_on_signals():
            summary = train(config, args.out, resume=args.resume, force=args.force, progress=not args.quiet,
                            argv=sys.argv[1:])  # fmt: skip
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # once under torchrun
            print(f"cutmix train: {exc}; resume with: {resume_command(argv)}", file=sys.stderr)
        return exc.exit_status
    accuracy = summary["test_acc"]
    tta = " (flip TTA)" if summary["tta_flip"] else ""
    if accuracy is not None:
        print(f"test accuracy{tta}: {accuracy:.2%}  wall time {summary['wall_time']:.0f} s  -> {args.out}")
    if summary["diverged"]:
        print(f"WARNING: run diverged: {summary['diverged']}")
        if config.stop_on_divergence:
            return 3
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(
        args.checkpoint, args.data, device=args.device, tta_flip=args.tta_flip, progress=not args.quiet
    )
    if result.remapped:
        note = f"note: the classes of {result.data} come in another order than the checkpoint's"
        print(f"{note}; mapped by name")
    tta = " (flip TTA)" if result.tta_flip else ""
    print(f"test accuracy{tta}: {result.accuracy:.2%}  loss {result.loss:.4f}")
    for name, acc in result.per_class.items():
        print(f"  {name:12s} {acc:7.2%}")
    if args.json:
        print(json.dumps({"test_acc": result.accuracy, "per_class": result.per_class}))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    predictions = iter_predictions(
        args.checkpoint, args.images, top_k=args.top_k, classes=args.classes, device="cpu"
    )
    for prediction in predictions:  # each printed as soon as it is made
        print(f"{prediction.file}: {', '.join(f'{name} {p:.1%}' for name, p in prediction.top)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train_parser = subparsers.add_parser(
        "train",
        help="train ResNet on a dataset, with or without mixing",
        description="Train ResNet (the Keras example's ResNet-20 by default). " + RECIPE_HELP,
    )
    add_train_options(train_parser, exclude=())
    train_parser.add_argument("--out", required=True, help="run folder")
    again = train_parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out")
    again.add_argument(
        "--force",
        action="store_true",
        help="start afresh in --out even if it holds a run (replaced), or a config.json, summary.json or "
        "metrics.jsonl that cutmix did not write (replaced; other files are left alone)",
    )
    train_parser.set_defaults(func=run_train)

    eval_parser = subparsers.add_parser(
        "evaluate", help="test accuracy and per-class accuracy of a checkpoint"
    )
    eval_parser.add_argument("--checkpoint", required=True)
    eval_parser.add_argument("--data", default=None, help="dataset (default: the one trained on)")
    eval_parser.add_argument("--device", default=None)
    eval_parser.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None)
    eval_parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    eval_parser.add_argument("--quiet", action="store_true")
    eval_parser.set_defaults(func=run_evaluate)

    predict_parser = subparsers.add_parser("predict", help="top-k classes of images (any size, resized)")
    predict_parser.add_argument("--checkpoint", required=True)
    predict_parser.add_argument("images", nargs="+", help="image files")
    predict_parser.add_argument("--top-k", type=int, default=3)
    predict_parser.add_argument("--classes", default=None, help="comma-separated class names")
    predict_parser.set_defaults(func=run_predict)
