"""A trained checkpoint, used from Python: loaded safely, evaluated on a data set, asked about images.

``cutmix evaluate`` and ``cutmix predict`` are thin shells over :func:`evaluate_checkpoint` and
:func:`iter_predictions`; both read the checkpoint once, through :func:`load_model`, which never runs
code from the file (:func:`cutmix.training.checkpoint.load_checkpoint`). The three are also
``cutmix.load_model``, ``cutmix.evaluate_checkpoint`` and ``cutmix.predict_files``, imported on first
use.

Errors are :class:`cutmix.errors.UsageError` (a bad argument) and :class:`cutmix.errors.DataError`
(a checkpoint, data set or image that cannot be used), their messages naming the command-line flag
the value comes from (``--checkpoint: ...``), as the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cutmix.errors import DataError, UsageError
from cutmix.training.checkpoint import load_checkpoint, match_classes
from cutmix.training.components import CIFAR10_MEAN, CIFAR10_STD, check_image_size, evaluate
from cutmix.training.config import TrainConfig, check_device
from cutmix.training.distributed import load_data

__all__ = [
    "Evaluation",
    "LoadedCheckpoint",
    "Prediction",
    "evaluate_checkpoint",
    "load_model",
    "predict_files",
]


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model (on ``device``, in eval mode), its config and the class names it holds
    (None for checkpoints older than class names)."""

    model: torch.nn.Module
    config: TrainConfig
    classes: list[str] | None


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_checkpoint` measured: test accuracy and loss, and the accuracy of each
    class, in the order of the checkpoint's outputs."""

    accuracy: float
    loss: float
    per_class: dict[str, float]
    tta_flip: bool  # scored on the mean of each image and its mirror image
    data: str  # the data set evaluated on
    remapped: bool  # its classes came in another order than the checkpoint's, and were mapped by name


@dataclass(frozen=True)
class Prediction:
    """The ``top_k`` classes of one image file, most probable first, as (class name, probability)."""

    file: str
    top: list[tuple[str, float]]


def _device(device: str | torch.device | None) -> torch.device:
    """None or "auto": the GPU where there is one, else the CPU; anything else must exist here."""
    spec = check_device("auto" if device is None else str(device))
    return (
        torch.device("cuda" if torch.cuda.is_available() else "cpu") if spec == "auto" else torch.device(spec)
    )


def load_model(checkpoint: str | Path, device: str | torch.device | None = None) -> LoadedCheckpoint:
    """The model, config and class names of a trained cutmix model, read once and safely, the model on
    ``device`` (None: the GPU where there is one, else the CPU) in eval mode.

    ``checkpoint`` is a run's ``checkpoint.pt`` (a file that names anything but tensors and plain
    containers is refused, never run) or a ``.safetensors`` model file exported from one
    (:mod:`cutmix.weights`); the model is built from either the same way, with the same refusals. A
    file that is neither, or holds a config or weights this version cannot load, is a
    :class:`DataError`.
    """
    from cutmix.models import resnet_v1

    target = _device(device)
    path = str(checkpoint)
    state, saved_config, classes = _read_model(path)
    try:
        config = TrainConfig(**saved_config)
        model = resnet_v1(config.depth, state["fc.weight"].shape[0])
        model.load_state_dict(state)
    except (TypeError, KeyError, AttributeError, IndexError, RuntimeError, ValueError) as exc:
        # Another version's config fields, or weights of another model: refused, not half-loaded.
        raise DataError(
            f"--checkpoint: {path} holds a config or weights this version cannot load "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    return LoadedCheckpoint(model.to(target).eval(), config, list(classes) if classes else None)


def _read_model(path: str) -> tuple[Any, Any, list[str] | None]:
    """The weights, the config (as saved: a dict) and the class names (None in older checkpoints) of
    the checkpoint or the ``.safetensors`` model file at ``path``, unchecked beyond their kind."""
    if Path(path).suffix == ".safetensors":
        from cutmix.weights import read_model_file

        return read_model_file(path)
    loaded = load_checkpoint(path)
    if not isinstance(loaded, dict) or "model" not in loaded or "config" not in loaded:
        raise DataError(f"--checkpoint: {path} is not a cutmix checkpoint (no model and config)")
    return loaded["model"], loaded["config"], loaded.get("classes")


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    device: str | torch.device | None = None,
    tta_flip: bool | None = None,
    batch_size: int = 1000,
    progress: bool = False,
) -> Evaluation:
    """Test accuracy, loss and per-class accuracy of the checkpoint at ``checkpoint`` on the test
    split of ``data`` (a data set name or path; None: the one it was trained on).

    The data set's labels are scored by class name: the same classes in another order are mapped
    (``remapped`` says so), other classes are refused. ``tta_flip`` None: as the run was trained
    and reported. ``progress`` shows a download's or a decode's progress bar.
    """
    from cutmix.data import DeviceLoader

    target = _device(device)
    loaded = load_model(checkpoint, target)
    model, config = loaded.model, loaded.config
    data = data or config.data
    dataset = load_data(data, progress=progress)
    check_image_size(dataset, data)
    num_outputs = model.fc.out_features
    remap = match_classes(loaded.classes, dataset.classes, num_outputs, data)
    labels, classes = dataset.test_labels, list(dataset.classes)
    if remap is not None:
        labels, classes = remap[labels], list(loaded.classes or ())
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else (None, None)
    loader = DeviceLoader(
        dataset.test_images,
        labels,
        batch_size,
        device=target,
        shuffle=False,
        drop_last=False,
        mean=mean,
        std=std,
    )
    tta = config.tta_flip if tta_flip is None else tta_flip
    result = evaluate(model, loader, num_outputs, None, tta)
    return Evaluation(
        accuracy=result["acc"],
        loss=result["loss"],
        per_class=dict(zip(classes, result["per_class"], strict=True)),
        tta_flip=tta,
        data=data,
        remapped=remap is not None,
    )


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


def _output_names(loaded: LoadedCheckpoint, classes: str | Sequence[str] | None) -> list[str]:
    """The name of each output: the checkpoint's, else ``classes`` (a list, or comma-separated),
    else those of the data set it was trained on."""
    num_outputs = loaded.model.fc.out_features
    if not classes:
        return loaded.classes or _dataset_classes(loaded.config, num_outputs)
    names = [name.strip() for name in (classes.split(",") if isinstance(classes, str) else classes)]
    if not all(names):
        raise UsageError(f"--classes: expected comma-separated non-empty names, got {classes!r}")
    # `classes` names the outputs of an older checkpoint that holds no names; names held by the
    # checkpoint are what it was trained on, so other names (or another order) would mislabel.
    if loaded.classes and names != list(loaded.classes):
        raise UsageError(f"--classes: expected the checkpoint's classes {list(loaded.classes)}, got {names}")
    if len(names) != num_outputs:
        raise UsageError(
            f"--classes: expected {num_outputs} names (the checkpoint's outputs), got {len(names)}: {names}"
        )
    return names


def iter_predictions(
    checkpoint: str | Path,
    files: Sequence[str | Path],
    *,
    top_k: int = 3,
    classes: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> Iterator[Prediction]:
    """:func:`predict_files`, one file at a time: the checkpoint and the arguments are checked now,
    each image is read and classified when its prediction is asked for."""
    if top_k < 1:
        raise UsageError(f"--top-k: expected a positive number of classes to show, got {top_k}")
    loaded = load_model(checkpoint, device)
    names = _output_names(loaded, classes)
    return _predictions(loaded, names, files, top_k)


def _predictions(
    loaded: LoadedCheckpoint, names: list[str], files: Sequence[str | Path], top_k: int
) -> Iterator[Prediction]:
    from PIL import Image, UnidentifiedImageError

    from cutmix.data.imagetree import to_rgb

    model, config = loaded.model, loaded.config
    device = next(model.parameters()).device
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    for path in files:
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
            probs = model(x[None].float().to(device)).softmax(1)[0]
        top = probs.topk(min(top_k, probs.numel()))
        ranked = [(names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
        yield Prediction(str(path), ranked)


def predict_files(
    checkpoint: str | Path,
    files: Sequence[str | Path],
    *,
    top_k: int = 3,
    classes: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> list[Prediction]:
    """The ``top_k`` classes of each image file in ``files`` (any size: resized to 32x32), by the
    checkpoint at ``checkpoint``, most probable first.

    The classes are named as the checkpoint names them; an older checkpoint without names takes
    ``classes`` (which must then match its outputs), else those of the data set it was trained on.
    A file that is not a readable image is a :class:`DataError`.
    """
    return list(iter_predictions(checkpoint, files, top_k=top_k, classes=classes, device=device))
