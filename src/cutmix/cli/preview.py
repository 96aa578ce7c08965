"""`cutmix preview`: a thin shell over :func:`cutmix.viz.preview.write_preview` (parse, load the data,
draw, print the path)."""

from __future__ import annotations

import argparse
import math

from cutmix.errors import UsageError
from cutmix.runinfo import check_picture_out
from cutmix.viz.preview import PREVIEW_MIXES, write_preview


def run(args: argparse.Namespace) -> int:
    from cutmix.training.distributed import load_data

    # Checked here, before the data set is loaded, with the flag's name (the op would say "alpha").
    if not (math.isfinite(args.alpha) and args.alpha > 0):
        raise UsageError(f"--alpha: expected a finite number > 0, got {args.alpha}")

    out = check_picture_out(args.out, force=args.force)  # before the data set is loaded
    dataset = load_data(args.data)
    path = write_preview(dataset, out, mix=args.mix, seed=args.seed, alpha=args.alpha)
    print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview", help="draw 9 training images after CutMix/MixUp/Cutout, as the Keras example does"
    )
    parser.add_argument(
        "--data",
        default="cifar10",
        help="a dataset name, CIFAR archive or folder, or image tree (default: cifar10)",
    )
    parser.add_argument("--mix", choices=PREVIEW_MIXES, default="cutmix", help="mixing op (default: cutmix)")
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="Beta(alpha, alpha) for cutmix/mixup (default: 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the images and the mixing (default: 0)")
    parser.add_argument(
        "--out",
        default="preview.png",
        help="output picture, in the format of its suffix: .png, .jpg/.jpeg, .pdf or .svg "
        "(default: preview.png)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace --out even if it is not a picture cutmix wrote"
    )
    parser.set_defaults(func=run)
