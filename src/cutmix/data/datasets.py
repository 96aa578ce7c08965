"""Datasets as uint8 arrays: the dispatcher :func:`load_dataset` and the public names re-exported.

``load_dataset(spec)`` accepts

* a name: ``cifar10``, ``cifar100``, ``synthetic`` or ``synthetic:N`` (N training images);
* an official tarball (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``), read in place
  without extracting anything;
* an extracted folder (``cifar-10-batches-py/``, ``cifar-100-python/``) or a folder holding one
  of those or of the tarballs;
* an image tree ``ROOT/{train,test}/<class>/*.{png,jpg,jpeg,bmp,webp}``.

Where each form is read: :mod:`cutmix.data.cifar` (CIFAR tarballs and folders, the local search
roots for the names ``cifar10``/``cifar100`` and their MD5-verified download),
:mod:`cutmix.data.imagetree` (image trees, decoded in parallel and cached) and
:mod:`cutmix.data.synthetic` (the generated set). :mod:`cutmix.data.base` holds the
:class:`Dataset` container they all return, :class:`DatasetNotFoundError` and
:func:`default_cache_dir`; all of these are importable from here too.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

from cutmix.data.base import DATA_DIR_ENV, Dataset, DatasetNotFoundError, default_cache_dir
from cutmix.data.cifar import (
    _FORMAT_OF_LOCAL_NAME,
    _FORMATS,
    _FORMATS_BY_NAME,
    CIFAR_MD5,
    CIFAR_URL_ENV,
    _load_named_cifar,
    _read_cifar_folder,
    _read_cifar_tarball,
    cifar_search_roots,
)
from cutmix.data.imagetree import _load_image_tree
from cutmix.data.segmentation import SEG_NAME, load_synthetic_seg
from cutmix.data.synthetic import SYNTHETIC_TRAIN, make_synthetic
from cutmix.errors import DataError

__all__ = [
    "CIFAR_MD5",
    "CIFAR_URL_ENV",
    "DATA_DIR_ENV",
    "Dataset",
    "DatasetNotFoundError",
    "cifar_search_roots",
    "default_cache_dir",
    "load_dataset",
    "make_synthetic",
]


def load_dataset(
    spec: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    download: bool = True,
    *,
    resize: tuple[int, int] | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> Dataset:
    """Load the dataset named or located by ``spec`` (see the module docstring for the forms).

    ``cache_dir``: where downloads and decoded image trees are kept (:func:`default_cache_dir`).
    ``progress``: show tqdm bars. ``download``: allow fetching CIFAR when no local copy exists.
    ``resize``: (H, W) for image trees of mixed sizes. ``seed``: for ``synthetic``. ``workers``:
    decoding processes for image trees (default: the CPUs this process may use).

    Names win over paths: to load a folder called ``cifar10``, pass ``./cifar10``.
    Raises ``ValueError`` for bad or damaged input and :class:`DatasetNotFoundError` when a
    named CIFAR set is neither found locally nor downloadable.
    """
    text = os.fspath(spec)
    if resize is not None:
        try:
            height, width = (operator.index(v) for v in resize)
        except (TypeError, ValueError):
            height = width = 0
        if height < 1 or width < 1:
            raise DataError(f"expected resize as (H, W), two positive integers, got {resize!r}")
        resize = (height, width)
    base, _, arg = text.partition(":")
    if base.lower() == SEG_NAME:  # generated shapes with masks and boxes (cutmix.data.segmentation)
        if resize is not None:
            raise DataError(f"resize applies to image folders only, not to {text!r}")
        return load_synthetic_seg(text, seed=seed)
    named = base.lower() == "synthetic" or text.lower() in _FORMATS_BY_NAME
    if named and resize is not None:
        raise DataError(f"resize applies to image folders only, not to {text!r}")
    if base.lower() == "synthetic":
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise DataError(f"expected synthetic:N with N a positive integer, got {text!r}")
        return make_synthetic(int(arg) if arg else SYNTHETIC_TRAIN, seed=seed)
    if text.lower() in _FORMATS_BY_NAME:
        return _load_named_cifar(
            _FORMATS_BY_NAME[text.lower()], default_cache_dir(cache_dir), progress, download
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            "expected a dataset name (cifar10, cifar100, synthetic, synthetic:N) or an existing "
            f"file or folder for spec, got {text!r}"
        )
    return _load_path(path, default_cache_dir(cache_dir), progress, resize, workers)


def _load_path(
    path: Path, cache_dir: Path, progress: bool, resize: tuple[int, int] | None, workers: int | None
) -> Dataset:
    if path.is_dir() and ((path / "train").is_dir() or (path / "test").is_dir()):
        return _load_image_tree(path, cache_dir, progress, resize, workers)
    if resize is not None:
        raise DataError(f"resize applies to image folders only, not to {path}")
    if path.is_file():
        return _read_cifar_tarball(path)
    for fmt in _FORMATS:
        # By name or by its meta file, so an incomplete copy gets a "missing <file>" error.
        if path.name == fmt.folder or (path / fmt.meta_file).is_file():
            return _read_cifar_folder(path, fmt)
    found = [
        p for fmt in _FORMATS for p in (path / fmt.folder, *(path / t for t in fmt.tarballs)) if p.exists()
    ]
    if len({_FORMAT_OF_LOCAL_NAME[p.name] for p in found}) > 1:
        raise DataError(f"{path} holds both CIFAR-10 and CIFAR-100; pass one of {', '.join(map(str, found))}")
    if found and found[0].is_dir():
        return _read_cifar_folder(found[0], _FORMAT_OF_LOCAL_NAME[found[0].name])
    if found:
        return _read_cifar_tarball(found[0])
    raise DataError(
        f"{path}: not a dataset folder; expected an image tree with train/ and test/ subfolders "
        "(ROOT/{train,test}/<class>/*.png|jpg|jpeg|bmp|webp), an extracted CIFAR folder "
        "(cifar-10-batches-py/, cifar-100-python/) or a folder holding one of those or their tarballs"
    )
