"""The robustness suite: one checkpoint, the test split, every measurement of issue 19.

:func:`evaluate_robustness` loads a checkpoint with :func:`cutmix.load_model`, takes the test split
(or a seeded class-stratified subset of it), and measures, batch by batch with every perturbation
a batched tensor op: clean accuracy, NLL, Brier and ECE; occlusion (centre and boundary); FGSM;
max-softmax out-of-distribution detection against uniform and Gaussian noise; the CIFAR-10-C-style
corruptions (or the released CIFAR-10-C files); and a CAM picture. No flip test-time augmentation,
in float32, the model in eval mode.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cutmix.errors import DataError, UsageError
from cutmix.robustness import metrics
from cutmix.robustness.attacks import (
    FGSM_EPS,
    OCCLUSION_SIZES,
    PixelModel,
    fgsm_direction,
    occlude,
    pixels,
)
from cutmix.robustness.attacks import occlusion_mask as _mask
from cutmix.robustness.corruptions import CORRUPTIONS, corrupt, generator_for, load_released

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "OOD_NOISES",
    "PROTOCOLS",
    "evaluate_robustness",
    "noise_image",
    "select_subset",
]

DEFAULT_BATCH_SIZE = 500
PROTOCOLS = ("center", "boundary")
OOD_NOISES = ("uniform", "gaussian")
# Generator streams: each kind of draw has its own, salted with the image's index in the evaluated set.
_OOD_STREAM, _CORRUPTION_STREAM = 1, 2
# The corruptions that draw random numbers (the others are deterministic functions of the image).
NOISY_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


@dataclass
class Prepared:
    """What the batches need: the model on pixels, the images and labels evaluated, the fill."""

    model: PixelModel
    images: np.ndarray  # uint8 (N, H, W, 3), the evaluated test images in test-split order
    labels: Tensor  # int64 (N,) on the device: the model's output index of each image's class
    index: np.ndarray  # int64 (N,): each image's position in the test split
    fill: Tensor  # (3,) the training split's mean colour, in [0, 1]
    names: tuple[str, ...]  # the corruptions measured
    released: dict[str, np.ndarray] | None  # the released CIFAR-10-C arrays, when given
    device: torch.device
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tally:
    """Counts and scores gathered over the batches."""

    logits: list[Tensor] = field(default_factory=list)
    correct: dict[str, int] = field(default_factory=dict)
    ood: dict[str, list[Tensor]] = field(default_factory=lambda: {k: [] for k in OOD_NOISES})
    forwards: int = 0

    def hit(self, key: str, logits: Tensor, labels: Tensor) -> None:
        self.correct[key] = self.correct.get(key, 0) + int((logits.argmax(1) == labels).sum())
        self.forwards += len(labels)


def _check_int(value: object, flag: str, what: str, low: int) -> int:
    try:
        number = operator.index(value)  # an int, not a float or a bool
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < low:
        raise UsageError(f"{flag}: expected {what}, got {value!r}")
    return number


def _corruption_names(corruptions: object) -> tuple[tuple[str, ...], Path | None]:
    """(the corruptions to measure, the released CIFAR-10-C folder or None) from ``corruptions``:
    None (all ten, generated), names (a list, or one comma-separated string), or a folder."""
    if corruptions is None:
        return CORRUPTIONS, None
    if isinstance(corruptions, os.PathLike) or (isinstance(corruptions, str) and os.path.isdir(corruptions)):
        return CORRUPTIONS, Path(corruptions)
    names = corruptions.split(",") if isinstance(corruptions, str) else list(corruptions)
    names = [str(n).strip() for n in names]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise UsageError(
            f"--corruptions: expected names among {', '.join(CORRUPTIONS)} or a CIFAR-10-C folder of "
            f".npy files, got {corruptions!r}"
        )
    return tuple(dict.fromkeys(names)), None


def select_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """The test images evaluated: all (``limit`` None or the split's size), else a class-stratified
    subset of ``limit`` images drawn from ``seed`` (:func:`cutmix.data.stratified_split`), in
    test-split order."""
    from cutmix.data import stratified_split

    n = len(labels)
    if limit is None or limit == n:
        return np.arange(n, dtype=np.int64)
    if limit > n:
        raise UsageError(f"--limit: expected at most the {n} test images, got {limit}")
    _, kept = stratified_split(labels, limit, seed=seed)
    return np.sort(kept)


def _load(checkpoint: str | Path, device: str | torch.device | None) -> Any:
    import cutmix

    try:
        return cutmix.load_model(checkpoint, device)
    except UsageError as exc:  # DataError too: a missing, damaged or hostile file
        message = str(exc)
        if message.startswith("--"):
            raise
        raise type(exc)(f"--checkpoint: {message}") from None


def _dataset(data: object, default: str) -> Any:
    from cutmix.data import Dataset, load_dataset

    if isinstance(data, Dataset):
        return data
    spec = default if data is None else data
    try:
        dataset = load_dataset(spec, progress=False)
    except UsageError as exc:
        raise DataError(str(exc) if str(exc).startswith("--") else f"--data: {exc}") from None
    if tuple(dataset.image_shape[:2]) != (32, 32):
        height, width = dataset.image_shape[:2]
        raise DataError(f"--data: expected 32x32 images for the CIFAR ResNet, got {height}x{width}: {spec}")
    return dataset


def _label_map(saved: list[str] | None, found: list[str], outputs: int, data: str) -> np.ndarray:
    """``remap[label]``: the model's output for each of the data set's labels. The same class
    names in another order are mapped by name; other names, or another count, are refused."""
    if saved is None:  # a checkpoint older than class names: trusted if the counts agree
        if len(found) != outputs:
            raise DataError(
                f"--data: expected {outputs} classes (the checkpoint's outputs), got {len(found)}"
            )
        return np.arange(outputs, dtype=np.int64)
    if sorted(found) != sorted(saved) or len(set(saved)) != len(saved):
        raise DataError(
            f"--data: {data} holds other classes than the checkpoint was trained on: expected {saved}, "
            f"got {list(found)}"
        )
    return np.array([saved.index(name) for name in found], dtype=np.int64)


def _prepare(
    loaded: Any, dataset: Any, data: str, limit: int | None, seed: int, corruptions: object
) -> Prepared:
    names, folder = _corruption_names(corruptions)
    model = loaded.model
    device = next(model.parameters()).device
    remap = _label_map(loaded.classes, list(dataset.classes), model.fc.out_features, data)
    index = select_subset(dataset.test_labels, limit, seed)
    released = None
    if folder is not None:
        released = load_released(folder, names, len(dataset.test_labels))
        names = tuple(n for n in names if n in released)
        if not np.array_equal(np.asarray(released["labels"][0], dtype=np.int64), dataset.test_labels):
            raise DataError(
                f"--corruptions: {folder}/labels.npy does not hold the labels of the test split of {data}"
            )
    # The training split's mean colour: the paper's zeros after normalisation, for every recipe.
    fill = torch.from_numpy(dataset.train_images.reshape(-1, 3).mean(0, dtype=np.float64) / 255.0).float()
    labels = torch.from_numpy(remap[dataset.test_labels[index]]).to(device)
    pixel_model = PixelModel(model, loaded.config.normalize).to(device).eval()
    classes = list(loaded.classes or dataset.classes)  # in the order of the model's outputs
    return Prepared(pixel_model, dataset.test_images[index], labels, index, fill, names, released, device,
                    {"classes": classes})  # fmt: skip


@torch.no_grad()
def _perturbed(prep: Prepared, tally: Tally, x: Tensor, y: Tensor, start: int, seed: int) -> None:
    """Occlusion, OOD noise and corruptions of one batch ``x`` whose first image is ``start``."""
    model = prep.model
    size = x.shape[-1]
    for protocol in PROTOCOLS:
        for s in OCCLUSION_SIZES:
            hole = _mask(size, s, protocol, x.device)
            tally.hit(f"occlusion/{protocol}/{s}", model(occlude(x, hole, prep.fill)), y)
    for k, noise in enumerate(OOD_NOISES):
        fake = torch.stack([noise_image(noise, x.shape[1:], seed, k, start + i) for i in range(len(x))])
        # Logits kept as the test images' are, and scored alike in _summary: a float32 softmax of a
        # confident model rounds to exactly 1.0, which would rank noise against test images unfairly.
        tally.ood[noise].append(model(fake.to(x)).float().cpu())
        tally.forwards += len(x)
    for k, name in enumerate(CORRUPTIONS):
        if name not in prep.names:
            continue
        for severity in range(1, 6):
            if prep.released is not None:
                rows = prep.index[start : start + len(x)]
                corrupted = pixels(prep.released[name][severity - 1][rows], x.device)
            else:
                corrupted = _corrupted(x, name, severity, seed, k, start)
            tally.hit(f"corruption/{name}/{severity}", model(corrupted), y)


def noise_image(noise: str, shape: torch.Size, seed: int, k: int, index: int) -> Tensor:
    """Noise image number ``index`` of kind ``noise`` (the ``k``-th of :data:`OOD_NOISES`): uniform
    U(0, 1), or Gaussian N(0.5, 1) clipped to [0, 1], per pixel, from its own generator."""
    generator = generator_for(seed, _OOD_STREAM, k, index)
    if noise == "uniform":
        return torch.rand(shape, generator=generator)
    return (0.5 + torch.randn(shape, generator=generator)).clamp(0, 1)


def _corrupted(x: Tensor, name: str, severity: int, seed: int, k: int, start: int) -> Tensor:
    # A corruption that draws noise draws it image by image, from a generator keyed by the image's
    # index in the evaluated set: the result is the same whatever the batch size (a GPU's batch is
    # not a CPU's). Poisson draws cannot be split otherwise. The model still sees whole batches.
    if name not in NOISY_CORRUPTIONS:
        return corrupt(x, name, severity, generator_for(seed, _CORRUPTION_STREAM, k, severity))
    return torch.cat([
        corrupt(x[i : i + 1], name, severity, generator_for(seed, _CORRUPTION_STREAM, k, severity, start + i))
        for i in range(len(x))
    ])  # fmt: skip


def _measure(prep: Prepared, seed: int, batch_size: int, progress: bool) -> Tally:
    tally = Tally()
    starts = range(0, len(prep.labels), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="robustness", unit="batch")
    for start in starts:
        x = pixels(prep.images[start : start + batch_size], prep.device)
        y = prep.labels[start : start + batch_size]
        logits, direction = fgsm_direction(prep.model, x, y)
        tally.logits.append(logits.float().cpu())
        tally.forwards += len(y)
        with torch.no_grad():
            for eps in FGSM_EPS:
                adversarial = (x + direction * (eps / 255.0)).clamp(0, 1)
                tally.hit(f"fgsm/{eps}", prep.model(adversarial), y)
        _perturbed(prep, tally, x, y, start, seed)
    return tally


def _summary(prep: Prepared, tally: Tally) -> dict[str, Any]:
    n = len(prep.labels)
    acc = {key: count / n for key, count in tally.correct.items()}
    logits, labels = torch.cat(tally.logits), prep.labels.cpu()
    clean = {"acc": float((logits.argmax(1) == labels).double().mean()), "nll": metrics.nll(logits, labels),
             "brier": metrics.brier(logits, labels), "ece": metrics.ece(logits, labels)}  # fmt: skip
    occlusion: dict[str, Any] = {
        p: {str(s): acc[f"occlusion/{p}/{s}"] for s in OCCLUSION_SIZES} for p in PROTOCOLS
    }
    for p in PROTOCOLS:
        occlusion[f"{p}_mean"] = float(np.mean(list(occlusion[p].values())))
    occlusion["mean"] = float(np.mean([occlusion[f"{p}_mean"] for p in PROTOCOLS]))
    positive = logits.double().softmax(1).amax(1)
    ood = {}
    for noise in OOD_NOISES:
        negative = torch.cat(tally.ood[noise]).double().softmax(1).amax(1)
        ood[noise] = {
            "auroc": metrics.auroc(positive, negative),
            "tnr_at_tpr95": metrics.tnr_at_tpr(positive, negative),
        }
    corruptions: dict[str, Any] = {
        name: {str(v): acc[f"corruption/{name}/{v}"] for v in range(1, 6)} for name in prep.names
    }
    corruptions["mean"] = float(np.mean([a for name in prep.names for a in corruptions[name].values()]))
    return {
        "clean": clean,
        "reliability": {"bins": metrics.ECE_BINS, **metrics.reliability(logits, labels)},
        "occlusion": occlusion,
        "fgsm": {str(eps): acc[f"fgsm/{eps}"] for eps in FGSM_EPS},
        "ood": ood,
        "corruptions": corruptions,
        "n_images": n,
        "forward_equivalents": tally.forwards,
    }


def evaluate_robustness(
    checkpoint: str | Path,
    data: Any = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    corruptions: str | Path | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    argv: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The robustness suite of the checkpoint at ``checkpoint`` on a test split.

    Args:
        checkpoint: a run's ``checkpoint.pt`` (or whatever :func:`cutmix.load_model` accepts).
        data: a data set name or path, or a :class:`cutmix.data.Dataset`; None: the one the run
            was trained on. Its classes must be the checkpoint's (another order is mapped by name).
        limit: evaluate a class-stratified subset of this many test images, drawn from ``seed``;
            None: the whole test split.
        seed: seeds the subset and every random draw (noise images, noisy corruptions).
        batch_size: images per batch (the random draws are made per batch: the results are
            deterministic for a given seed and batch size).
        corruptions: None (the ten CIFAR-10-C-style corruptions, generated), some of their names
            (a list or a comma-separated string), or the folder of the released CIFAR-10-C
            ``.npy`` files, which are then used instead.
        device: where to run (None: the GPU where there is one, else the CPU).
        out: a folder to write robustness.json, robustness.md, robustness.png and cam.png to.
        argv: the command line, recorded as the provenance's ``command``.
        progress: show a progress bar over the batches.

    Returns:
        The JSON-ready results: ``clean``, ``reliability``, ``occlusion``, ``fgsm``, ``ood``,
        ``corruptions``, ``n_images``, ``checkpoint``, ``settings`` and the provenance.

    Raises:
        UsageError: a bad ``limit``, ``seed``, ``batch_size``, corruption name or ``out``.
        DataError: a missing or unreadable checkpoint, data whose classes differ from the
            checkpoint's, or an unusable CIFAR-10-C folder.
    """
    from cutmix.robustness.report import check_out, write_outputs
    from cutmix.runinfo import environment

    if limit is not None:
        limit = _check_int(limit, "--limit", "a positive number of test images", 1)
    seed = _check_int(seed, "--seed", "an integer >= 0", 0)
    batch_size = _check_int(batch_size, "--batch-size", "a positive number of images", 1)
    _corruption_names(corruptions)  # a bad name is refused before anything is loaded
    out_dir = check_out(out) if out is not None else None
    loaded = _load(checkpoint, device)
    spec = loaded.config.data if data is None else getattr(data, "name", data)
    dataset = _dataset(data, loaded.config.data)
    prep = _prepare(loaded, dataset, str(spec), limit, seed, corruptions)
    tally = _measure(prep, seed, batch_size, progress)
    result = _summary(prep, tally)
    released = prep.released is not None
    result["checkpoint"] = str(checkpoint)
    result["settings"] = {
        "data": str(spec),
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "tta_flip": False,
        "precision": "fp32",
        "normalize": bool(loaded.config.normalize),
        "fill": prep.fill.tolist(),
        "corruptions": "released CIFAR-10-C files" if released else "CIFAR-10-C-style (generated)",
        "corruptions_folder": str(_corruption_names(corruptions)[1]) if released else None,
    }
    result.update(environment(prep.device, argv))
    if out_dir is not None:
        write_outputs(result, out_dir, prep)
    return result
