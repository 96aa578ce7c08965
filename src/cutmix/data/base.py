"""The in-memory ``Dataset`` container, its errors, shared validation helpers and the cache dir.

Every loader (:mod:`cutmix.data.cifar`, :mod:`cutmix.data.imagetree`,
:mod:`cutmix.data.synthetic`) builds a :class:`Dataset` from here; the dispatcher
:func:`cutmix.data.datasets.load_dataset` picks the loader. Kept apart from the dispatcher so
the loaders can import it without an import cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cutmix.errors import DatasetNotFoundError

__all__ = ["DATA_DIR_ENV", "Dataset", "DatasetNotFoundError", "default_cache_dir"]

DATA_DIR_ENV = "CUTMIX_DATA_DIR"


@dataclass(repr=False, eq=False)
class Dataset:
    """A labelled train/test split held in memory.

    ``train_images``/``test_images``: uint8 arrays (N, H, W, 3), RGB. ``train_labels``/
    ``test_labels``: int64 arrays (N,) indexing ``classes``. ``source`` says where the data came
    from. CIFAR-100 also fills ``train_coarse_labels``/``test_coarse_labels`` (int64 (N,)) and
    ``coarse_classes`` (its 20 superclasses); they are ``None`` for every other dataset.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    name: str
    source: str
    train_coarse_labels: np.ndarray | None = None
    test_coarse_labels: np.ndarray | None = None
    coarse_classes: list[str] | None = None

    def __post_init__(self) -> None:
        coarse = (self.train_coarse_labels, self.test_coarse_labels, self.coarse_classes)
        if any(c is None for c in coarse) and not all(c is None for c in coarse):
            raise ValueError("expected train_coarse_labels, test_coarse_labels and coarse_classes together")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4):
                raise ValueError(
                    f"expected {split}_images as a uint8 array (N, H, W, 3), got {_describe(images)}"
                )
            if images.shape[-1] != 3 or images.shape[1:] != self.train_images.shape[1:]:
                raise ValueError(
                    f"expected {split}_images of shape (N, H, W, 3) matching train_images, got {images.shape}"
                )
            _check_labels(getattr(self, f"{split}_labels"), len(images), len(self.classes), f"{split}_labels")
            if self.coarse_classes is not None:
                _check_labels(
                    getattr(self, f"{split}_coarse_labels"),
                    len(images),
                    len(self.coarse_classes),
                    f"{split}_coarse_labels",
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3)."""
        return tuple(self.train_images.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_images)}, test={len(self.test_images)}, "
            f"image_shape={self.image_shape}, classes={self.num_classes}, source={self.source!r})"
        )


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"array of dtype {x.dtype} and shape {x.shape}"
    return type(x).__name__


def _check_labels(labels: Any, n: int, num_classes: int, what: str) -> None:
    if not (isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.shape == (n,)):
        raise ValueError(f"expected {what} as an int64 array of shape ({n},), got {_describe(labels)}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"expected {what} in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]"
        )


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$CUTMIX_DATA_DIR``, else ``~/.cache/cutmix``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cutmix"
