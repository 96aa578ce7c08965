"""`cutmix demo`: a thin shell over :func:`cutmix.viz.demo.write_demo` (offline, seconds)."""

from __future__ import annotations

import argparse

from cutmix.runinfo import check_picture_out
from cutmix.viz.demo import write_demo


def run(args: argparse.Namespace) -> int:
    out = check_picture_out(args.out, force=args.force)
    path = write_demo(out, seed=args.seed)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="draw CutMix, MixUp and Cutout on generated images (offline, seconds)"
    )
    parser.add_argument(
        "--out",
        default="demo.png",
        help="output picture, in the format of its suffix: .png, .jpg/.jpeg, .pdf or .svg "
        "(default: demo.png)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace --out even if it is not a picture cutmix wrote"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the ops' generators (default: 0)")
    parser.set_defaults(func=run)
