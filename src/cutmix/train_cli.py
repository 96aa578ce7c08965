"""`cutmix train`, `cutmix evaluate` and `cutmix predict`: thin shells over cutmix.train."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from cutmix.config import (
    AUGMENTS,
    MIXES,
    OPTIMIZERS,
    PARTNERS,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    resolve_config,
)
from cutmix.train import CIFAR10_MEAN, CIFAR10_STD, evaluate, load_checkpoint, train

RECIPE_HELP = (
    "seed: the Keras example's choices (ResNet-20, Adam lr 1e-3 eps 1e-7, batch 32, 15 epochs, "
    "[0, 1] pixels, no crop/flip, CutMix alpha 0.25 with the partner from a second, independently "
    "shuffled stream, L2 1e-4 on conv kernels), with two deliberate fixes: every arm gets a full "
    "shuffle each epoch (the seed never shuffles its no-augmentation arm and shuffles its CutMix "
    "streams with a 1024-image buffer), and an empty box mixes nothing (the seed pastes 1 pixel). "
    "fast: crop+flip, SGD-Nesterov one-cycle, label smoothing, batch 128, mixing off for the last "
    "epochs, flip test-time augmentation (reported as such). Explicit options override the recipe."
)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by `train` and `compare` (all default to None: the recipe decides)."""
    parser.add_argument("--data", default=None, help="dataset: cifar10, cifar100, synthetic, or a path")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="seed", help=RECIPE_HELP)
    parser.add_argument("--mix", choices=MIXES, default=None, help="mixing op (train; compare uses --arms)")
    parser.add_argument("--alpha", type=float, default=None, help="Beta(alpha, alpha) for CutMix/MixUp")
    parser.add_argument("--mix-p", type=float, default=None, help="probability that a sample is mixed")
    parser.add_argument("--cutout-size", type=int, default=None, help="Cutout square side in pixels")
    parser.add_argument(
        "--partner",
        choices=PARTNERS,
        default=None,
        help="permute/roll/flip within the batch, or stream: a second shuffled stream",
    )
    parser.add_argument("--mix-off-epochs", type=int, default=None, help="no mixing in the last N epochs")
    parser.add_argument("--augment", choices=AUGMENTS, default=None)
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="normalise by CIFAR-10 channel mean/std",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    parser.add_argument("--lr", type=float, default=None, help="(peak) learning rate")
    parser.add_argument("--momentum", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=None, help="optimizer decay on conv kernels")
    parser.add_argument("--l2", type=float, default=None, help="Keras-style L2 on conv kernels, in the loss")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None)
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument(
        "--tta-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate on the mean of each image and its mirror image",
    )
    parser.add_argument("--depth", type=int, default=None, help="ResNet depth 6n+2 (default 20)")
    parser.add_argument(
        "--bn-momentum",
        type=float,
        default=None,
        help="BatchNorm momentum, PyTorch convention (seed: 0.01 = Keras 0.99)",
    )
    parser.add_argument("--val", type=int, default=None, help="hold out N training images for validation")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="auto: bf16 autocast on GPU, fp32 on CPU"
    )
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--stop-on-divergence",
        action="store_true",
        default=None,
        help="end with exit status 3 when the run diverges",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


CONFIG_OPTIONS = [
    "data",
    "mix",
    "alpha",
    "mix_p",
    "cutout_size",
    "partner",
    "mix_off_epochs",
    "augment",
    "normalize",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "l2",
    "schedule",
    "label_smoothing",
    "tta_flip",
    "depth",
    "bn_momentum",
    "val",
    "device",
    "precision",
    "compile",
    "stop_on_divergence",
]


def config_from_args(args: argparse.Namespace, **extra) -> TrainConfig:
    overrides = {name: getattr(args, name, None) for name in CONFIG_OPTIONS}
    overrides.update(extra)
    if overrides["data"] is None:
        overrides["data"] = "cifar10"
    return resolve_config(args.recipe, **overrides)


def run_train(args: argparse.Namespace) -> int:
    config = config_from_args(args, seed=args.seed, init=args.init)
    summary = train(config, args.out, resume=args.resume, progress=not args.quiet, argv=sys.argv[1:])
    accuracy = summary["test_acc"]
    tta = " (flip TTA)" if summary["tta_flip"] else ""
    if accuracy is not None:
        print(f"test accuracy{tta}: {accuracy:.2%}  wall time {summary['wall_time']:.0f} s  -> {args.out}")
    if summary["diverged"]:
        print(f"WARNING: run diverged: {summary['diverged']}")
        if config.stop_on_divergence:
            return 3
    return 0


def _model_from_checkpoint(path: str, device: torch.device):
    from cutmix.models import resnet_v1

    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"--checkpoint: {path} is not a cutmix checkpoint (no model and config)")
    config = TrainConfig(**checkpoint["config"])
    num_classes = checkpoint["model"]["fc.weight"].shape[0]
    model = resnet_v1(config.depth, num_classes)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config


def run_evaluate(args: argparse.Namespace) -> int:
    from cutmix.data import DeviceLoader, load_dataset

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = _model_from_checkpoint(args.checkpoint, device)
    dataset = load_dataset(args.data or config.data, progress=not args.quiet)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else (None, None)
    loader = DeviceLoader(
        dataset.test_images,
        dataset.test_labels,
        1000,
        device=device,
        shuffle=False,
        drop_last=False,
        mean=mean,
        std=std,
    )
    tta = config.tta_flip if args.tta_flip is None else args.tta_flip
    result = evaluate(model, loader, len(dataset.classes), None, tta)
    print(f"test accuracy{' (flip TTA)' if tta else ''}: {result['acc']:.2%}  loss {result['loss']:.4f}")
    for name, acc in zip(dataset.classes, result["per_class"], strict=True):
        print(f"  {name:12s} {acc:7.2%}")
    if args.json:
        print(
            json.dumps(
                {
                    "test_acc": result["acc"],
                    "per_class": dict(zip(dataset.classes, result["per_class"], strict=True)),
                }
            )
        )
    return 0


def _checkpoint_classes(path: str, config: TrainConfig) -> list[str]:
    """Class names stored in the checkpoint, or (older checkpoints) those of its dataset."""
    classes = load_checkpoint(path).get("classes")
    if classes:
        return list(classes)
    from cutmix.data import load_dataset

    return load_dataset(config.data, progress=False).classes


def run_predict(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    device = torch.device("cpu")
    model, config = _model_from_checkpoint(args.checkpoint, device)
    classes = args.classes.split(",") if args.classes else _checkpoint_classes(args.checkpoint, config)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    for path in args.images:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32)
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from exc
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
    add_train_options(train_parser)
    train_parser.add_argument("--seed", type=int, default=0, help="seed of init, data order and mixing")
    train_parser.add_argument("--init", default=None, help="initial weights (init.pt of another run)")
    train_parser.add_argument("--out", required=True, help="run folder")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --out")
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
