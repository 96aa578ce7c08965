"""The suite's files: robustness.json, robustness.md, robustness.png and cam.png, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cutmix.errors import UsageError

__all__ = ["OUTPUT_FILES", "check_out", "markdown", "write_outputs"]

OUTPUT_FILES = ("robustness.json", "robustness.md", "robustness.png", "cam.png")


def check_out(out: str | Path) -> Path:
    """``out`` as a folder to write into, checked before anything is computed: not a file, and not a
    folder holding files of the suite's names that an earlier run of the suite did not write (a
    user's own robustness.md is never replaced)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out: expected a folder for the robustness files, got the file {str(path)!r}")
    present = [name for name in OUTPUT_FILES if (path / name).exists()]
    if present and not _written_by_us(path / "robustness.json"):
        raise UsageError(
            f"--out: {str(path)!r} holds {', '.join(present)} that `cutmix robustness` did not write "
            "(no robustness.json of ours); refusing to overwrite them: choose another --out"
        )
    return path


def _written_by_us(path: Path) -> bool:
    import json

    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(recorded, dict) and {"clean", "occlusion", "fgsm", "checkpoint", "settings"} <= set(
        recorded
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict[str, Any]) -> str:
    """robustness.md: the suite's numbers as tables, with the protocol and the provenance."""
    settings, clean, occlusion = result["settings"], result["clean"], result["occlusion"]
    sizes = list(occlusion["center"])
    lines = [
        f"# Robustness of {result['checkpoint']}",
        "",
        f"{result['n_images']} test images of {settings['data']} (seed {settings['seed']}"
        + (f", a class-stratified subset of {settings['limit']}" if settings["limit"] else "")
        + "), model in eval mode, float32, **no flip test-time augmentation** (the accuracy tables of "
        "the training reports keep theirs, so clean accuracy here can be lower).",
        "",
        "## Clean",
        "",
        _row(["accuracy %", "NLL", "Brier", "ECE (15 bins) %"]),
        _row(["---"] * 4),
        _row([_pct(clean["acc"]), f"{clean['nll']:.4f}", f"{clean['brier']:.4f}", _pct(clean["ece"])]),
        "",
        "## Occlusion (accuracy %, fill: the training split's mean colour)",
        "",
        _row(["protocol", *[f"s={s}" for s in sizes], "mean"]),
        _row(["---"] * (len(sizes) + 2)),
        *(
            _row([p, *[_pct(occlusion[p][s]) for s in sizes], _pct(occlusion[f"{p}_mean"])])
            for p in ("center", "boundary")
        ),
        "",
        f"Mean over both protocols: {_pct(occlusion['mean'])}%.",
        "",
        "## FGSM (accuracy %, one signed-gradient step on pixels in [0, 1])",
        "",
        _row([f"eps={e}/255" for e in result["fgsm"]]),
        _row(["---"] * len(result["fgsm"])),
        _row([_pct(v) for v in result["fgsm"].values()]),
        "",
        "## Out-of-distribution detection (max softmax; test images against as many noise images)",
        "",
        _row(["noise", "AUROC %", "TNR at 95% TPR %"]),
        _row(["---"] * 3),
        *(_row([k, _pct(v["auroc"]), _pct(v["tnr_at_tpr95"])]) for k, v in result["ood"].items()),
        "",
        *_corruption_lines(result),
        "",
        "## Provenance",
        "",
        f"- command: `{result.get('command', '')}`",
        f"- versions: {', '.join(f'{k} {v}' for k, v in (result.get('versions') or {}).items())}",
        f"- hardware: {', '.join(f'{k}: {v}' for k, v in (result.get('hardware') or {}).items())}",
        f"- git commit: {result.get('git_commit') or 'unknown'}",
        "",
    ]
    return "\n".join(lines)


def _corruption_lines(result: dict[str, Any]) -> list[str]:
    settings, corruptions = result["settings"], result["corruptions"]
    names = [n for n in corruptions if n != "mean"]
    if settings["corruptions_folder"]:
        title = f"## Corruptions: the released CIFAR-10-C files from {settings['corruptions_folder']}"
    else:
        title = "## CIFAR-10-C-style corruptions (generated on the fly, not the released files)"
    return [
        title + " (accuracy %)",
        "",
        _row(["corruption", *[f"severity {v}" for v in range(1, 6)], "mean"]),
        _row(["---"] * 7),
        *(
            _row(
                [
                    n,
                    *[_pct(corruptions[n][str(v)]) for v in range(1, 6)],
                    _pct(float(np.mean(list(corruptions[n].values())))),
                ]
            )  # fmt: skip
            for n in names
        ),
        "",
        f"Mean over corruptions and severities: {_pct(corruptions['mean'])}%.",
    ]


def _figure(result: dict[str, Any]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    bins = result["reliability"]
    n = bins["bins"]
    centres = [(i + 0.5) / n for i in range(n)]
    accuracy = [a if a is not None else 0.0 for a in bins["accuracy"]]
    axes[0].bar(centres, accuracy, width=1 / n, edgecolor="black", alpha=0.7, label="accuracy")
    axes[0].plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    axes[0].set(title=f"reliability (ECE {_pct(result['clean']['ece'])}%)", xlabel="confidence",
                ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    axes[0].legend(loc="upper left")
    occlusion = result["occlusion"]
    for protocol in ("center", "boundary"):
        sizes = [int(s) for s in occlusion[protocol]]
        axes[1].plot(sizes, list(occlusion[protocol].values()), marker="o", label=protocol)
    axes[1].set(title="occlusion", xlabel="side s (pixels)", ylabel="accuracy", ylim=(0, 1))
    axes[1].legend()
    eps = [int(e) for e in result["fgsm"]]
    axes[2].plot(eps, list(result["fgsm"].values()), marker="o")
    axes[2].set(title="FGSM", xlabel="eps (/255)", ylabel="accuracy", ylim=(0, 1))
    corruptions = {k: v for k, v in result["corruptions"].items() if k != "mean"}
    for name, by_severity in corruptions.items():
        axes[3].plot(range(1, 6), list(by_severity.values()), marker=".", label=name)
    title = "CIFAR-10-C" if result["settings"]["corruptions_folder"] else "CIFAR-10-C-style"
    axes[3].set(title=f"{title} corruptions", xlabel="severity", ylabel="accuracy", ylim=(0, 1))
    axes[3].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def _cam_figure(prep: Any) -> Any:
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cutmix.robustness.attacks import pixels
    from cutmix.robustness.cam import cam_images, class_activation_maps

    labels = prep.labels.cpu().numpy()
    picks = cam_images(labels, prep.model.model.fc.out_features)
    x = pixels(prep.images[picks], prep.device)
    with torch.no_grad():
        maps, predicted = class_activation_maps(prep.model, x)
    names = prep.settings.get("classes") or [str(i) for i in range(prep.model.model.fc.out_features)]
    fig = Figure(figsize=(1.6 * max(len(picks), 1), 3.6))
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(2, max(len(picks), 1), squeeze=False))
    for column, i in enumerate(picks):
        image = prep.images[i]
        axes[0, column].imshow(image)
        axes[0, column].set_title(f"true: {names[labels[i]]}", fontsize=7)
        axes[1, column].imshow(image)
        axes[1, column].imshow(maps[column].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[1, column].set_title(f"CAM: {names[int(predicted[column])]}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


def write_outputs(result: dict[str, Any], out_dir: Path, prep: Any) -> None:
    """Writes the four files of :data:`OUTPUT_FILES` into ``out_dir``, each atomically."""
    from cutmix.runinfo import atomic_save_figure, atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "robustness.json", result)
    atomic_write_text(out_dir / "robustness.md", markdown(result))
    atomic_save_figure(_figure(result), out_dir / "robustness.png")
    atomic_save_figure(_cam_figure(prep), out_dir / "cam.png")
