"""`cutmix robustness` and `cutmix export`: thin shells over
:func:`cutmix.robustness.evaluate_robustness` and :func:`cutmix.weights.export_checkpoint`."""

from __future__ import annotations

import argparse
import sys


def run_robustness(args: argparse.Namespace) -> int:
    from cutmix.robustness import evaluate_robustness

    result = evaluate_robustness(
        args.checkpoint,
        args.data,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        corruptions=args.corruptions,
        device=args.device,
        out=args.out,
        argv=sys.argv[1:],
        progress=not args.quiet,
    )
    clean, occlusion, fgsm = result["clean"], result["occlusion"], result["fgsm"]
    print(
        f"{result['n_images']} test images, no flip TTA: accuracy {clean['acc']:.2%}  "
        f"ECE {clean['ece']:.4f}  NLL {clean['nll']:.4f}"
    )
    print(
        f"occlusion mean: centre {occlusion['center_mean']:.2%}, boundary {occlusion['boundary_mean']:.2%}; "
        f"FGSM 8/255: {fgsm['8']:.2%}; corruptions mean: {result['corruptions']['mean']:.2%}"
    )
    print(f"-> {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from cutmix.weights import export_checkpoint

    classes = args.classes.split(",") if args.classes else None
    print(export_checkpoint(args.checkpoint, args.out, classes=classes))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from cutmix.robustness import DEFAULT_BATCH_SIZE

    parser = subparsers.add_parser(
        "robustness",
        help="calibration, occlusion, FGSM, noise-image detection and CIFAR-10-C-style corruptions "
        "of a checkpoint",
        description="Beyond accuracy: clean accuracy, NLL, Brier and ECE (15 bins); centre and boundary "
        "occlusion with the training mean colour; FGSM at 0-8/255; max-softmax detection of uniform and "
        "Gaussian noise images; ten CIFAR-10-C-style corruptions at five severities (generated, or the "
        "released files with --corruptions DIR); a CAM picture. No flip test-time augmentation. Writes "
        "robustness.json, robustness.md, robustness.png and cam.png into --out.",
    )
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt or model.safetensors")
    parser.add_argument("--data", default=None, help="dataset (default: the one trained on)")
    parser.add_argument(
        "--limit", type=int, default=None, help="a seeded class-stratified subset of N test images"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the subset and every random draw")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--corruptions",
        default=None,
        help="comma-separated corruption names, or the released CIFAR-10-C folder (default: all ten, "
        "generated)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run_robustness)

    export = subparsers.add_parser(
        "export",
        help="write a run's final model as model.safetensors",
        description="Write the model of a checkpoint.pt as a safetensors file (weights, with the config "
        "and class names in its metadata) that cutmix.load_model and `cutmix robustness` accept.",
    )
    export.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt")
    export.add_argument("--out", default=None, help="file to write (default: model.safetensors beside it)")
    export.add_argument(
        "--classes", default=None, help="comma-separated class names, for a checkpoint that has none"
    )
    export.set_defaults(func=run_export)
