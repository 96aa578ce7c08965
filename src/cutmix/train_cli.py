"""`cutmix train`, `cutmix evaluate` and `cutmix predict`: thin shells over cutmix.train."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from cutmix.config import (  # noqa: F401 - RECIPE_HELP re-exported for cutmix.compare
    RECIPE_HELP,
    RUN_OPTIONS,
    TrainConfig,
    add_config_options,
    check_device,
    config_from_options,
)
from cutmix.errors import DataError, UsageError
from cutmix.train import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    check_image_size,
    evaluate,
    is_run_folder,
    load_checkpoint,
    load_data,
    match_classes,
    train,
)


def add_train_options(parser: argparse.ArgumentParser, exclude: Collection[str] = RUN_OPTIONS) -> None:
    """The options shared by `train` and `compare`: one per TrainConfig field (all default to None: the
    recipe decides), except ``exclude`` (by default the per-run ``seed`` and ``init``), and --quiet."""
    add_config_options(parser, exclude=exclude)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# Every TrainConfig field but the recipe (which config_from_args passes on its own), in field order.
CONFIG_OPTIONS = [f.name for f in fields(TrainConfig) if f.name != "recipe"]


def config_from_args(args: argparse.Namespace, **extra) -> TrainConfig:
    """The validated config of parsed `train`/`compare` options (``--data`` defaults to cifar10)."""
    options = vars(args).copy()
    if options.get("data") is None and extra.get("data") is None:
        options["data"] = "cifar10"
    return config_from_options(options, **extra)


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


def run_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.resume:
        check_resume(Path(args.out))
    summary = train(
        config,
        args.out,
        resume=args.resume,
        force=args.force,
        progress=not args.quiet,
        argv=sys.argv[1:],
    )
    accuracy = summary["test_acc"]
    tta = " (flip TTA)" if summary["tta_flip"] else ""
    if accuracy is not None:
        print(f"test accuracy{tta}: {accuracy:.2%}  wall time {summary['wall_time']:.0f} s  -> {args.out}")
    if summary["diverged"]:
        print(f"WARNING: run diverged: {summary['diverged']}")
        if config.stop_on_divergence:
            return 3
    return 0


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model (on ``device``, in eval mode), its config and the class names it holds."""

    model: torch.nn.Module
    config: TrainConfig
    classes: list[str] | None


def load_model(path: str, device: torch.device) -> LoadedCheckpoint:
    """Reads the checkpoint at ``path`` once; a file that is not a cutmix checkpoint is a DataError."""
    from cutmix.models import resnet_v1

    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise DataError(f"--checkpoint: {path} is not a cutmix checkpoint (no model and config)")
    try:
        config = TrainConfig(**checkpoint["config"])
        model = resnet_v1(config.depth, checkpoint["model"]["fc.weight"].shape[0])
        model.load_state_dict(checkpoint["model"])
    except (TypeError, KeyError, AttributeError, IndexError, RuntimeError, ValueError) as exc:
        # Another version's config fields, or weights of another model: refused, not half-loaded.
        raise DataError(
            f"--checkpoint: {path} holds a config or weights this version cannot load "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    classes = checkpoint.get("classes")
    return LoadedCheckpoint(model.to(device).eval(), config, list(classes) if classes else None)


def run_evaluate(args: argparse.Namespace) -> int:
    from cutmix.data import DeviceLoader

    check_device(args.device or "auto")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load_model(args.checkpoint, device)
    model, config = loaded.model, loaded.config
    data = args.data or config.data
    dataset = load_data(data, progress=not args.quiet)
    check_image_size(dataset, data)
    # Labels are scored against the checkpoint's outputs by class name, not by folder position.
    saved_classes = loaded.classes
    num_outputs = model.fc.out_features
    remap = match_classes(saved_classes, dataset.classes, num_outputs, data)
    labels, classes = dataset.test_labels, list(dataset.classes)
    if remap is not None:
        labels, classes = remap[labels], list(saved_classes)
        print(f"note: the classes of {data} come in another order than the checkpoint's; mapped by name")
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else (None, None)
    loader = DeviceLoader(
        dataset.test_images,
        labels,
        1000,
        device=device,
        shuffle=False,
        drop_last=False,
        mean=mean,
        std=std,
    )
    tta = config.tta_flip if args.tta_flip is None else args.tta_flip
    result = evaluate(model, loader, num_outputs, None, tta)
    print(f"test accuracy{' (flip TTA)' if tta else ''}: {result['acc']:.2%}  loss {result['loss']:.4f}")
    for name, acc in zip(classes, result["per_class"], strict=True):
        print(f"  {name:12s} {acc:7.2%}")
    if args.json:
        print(
            json.dumps(
                {
                    "test_acc": result["acc"],
                    "per_class": dict(zip(classes, result["per_class"], strict=True)),
                }
            )
        )
    return 0


def _dataset_classes(config: TrainConfig, num_outputs: int) -> list[str]:
    """The class names of an older checkpoint (which holds none): those of the data set it names."""
    from cutmix.data import load_dataset

    classes = list(load_dataset(config.data, progress=False).classes)
    if len(classes) != num_outputs:
        raise DataError(
            f"--checkpoint holds no class names and its data set {config.data} has {len(classes)} "
            f"classes for {num_outputs} outputs; name them with --classes"
        )
    return classes


def run_predict(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from cutmix.data.imagetree import to_rgb

    if args.top_k < 1:
        raise UsageError(f"--top-k: expected a positive number of classes to show, got {args.top_k}")
    loaded = load_model(args.checkpoint, torch.device("cpu"))
    model, config = loaded.model, loaded.config
    if args.classes:
        classes = [name.strip() for name in args.classes.split(",")]
        if not all(classes):
            raise UsageError(f"--classes: expected comma-separated non-empty names, got {args.classes!r}")
        saved = loaded.classes
        # --classes names the outputs of an older checkpoint that holds no names; names held by the
        # checkpoint are what it was trained on, so other names (or another order) would mislabel.
        if saved and classes != list(saved):
            raise UsageError(f"--classes: expected the checkpoint's classes {list(saved)}, got {classes}")
        if len(classes) != model.fc.out_features:
            raise UsageError(
                f"--classes: expected {model.fc.out_features} names (the checkpoint's outputs), "
                f"got {len(classes)}: {classes}"
            )
    else:
        classes = loaded.classes or _dataset_classes(config, model.fc.out_features)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    for path in args.images:
        try:
            with Image.open(path) as image:
                # to_rgb: 16-bit images scaled to 8 bits (convert("RGB") would make them white).
                rgb = to_rgb(image, path).resize((32, 32), Image.BILINEAR)
                pixels = np.asarray(rgb, dtype=np.float32)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from exc
        x = torch.from_numpy(pixels / 255.0).permute(2, 0, 1)
        x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        with torch.no_grad():
            probs = model(x[None].float()).softmax(1)[0]
        top = probs.topk(min(args.top_k, probs.numel()))
        ranked = ", ".join(
            f"{classes[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        )
        print(f"{path}: {ranked}")
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
