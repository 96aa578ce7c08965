"""Datasets as uint8 arrays: CIFAR-10/100 in their official formats, image folders, a synthetic set.

``load_dataset(spec)`` accepts

* a name: ``cifar10``, ``cifar100``, ``synthetic`` or ``synthetic:N`` (N training images);
* an official tarball (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``), read in place
  without extracting anything;
* an extracted folder (``cifar-10-batches-py/``, ``cifar-100-python/``) or a folder holding one
  of those or of the tarballs;
* an image tree ``ROOT/{train,test}/<class>/*.{png,jpg,jpeg,bmp,webp}``.

For the names ``cifar10``/``cifar100`` local copies are looked for first, in this order (see
:func:`cifar_search_roots`): the cache dir, ``~/.keras/datasets`` (where Keras keeps
``cifar-10-batches-py/``), then the usual torchvision roots ``./data``, ``~/data`` and
``~/.torch/datasets``. Only if none holds a copy is the official tarball downloaded into the cache
dir, MD5-verified. Local copies are checked by structure, not checksum, so re-packed copies work.

Untrusted input stays data: CIFAR pickles go through an unpickler that admits only numpy array
reconstruction, and tarball members are read in memory, never extracted (absolute or ``..`` names
are refused outright). Damaged input raises ``ValueError`` naming the file.

Image trees: classes are the sorted folder names, files are taken in sorted name order (hidden
files and other extensions are ignored). All images must share one size, otherwise loading fails
naming a file of the odd size, unless ``resize=(H, W)`` is given, which resizes every image that
differs (bilinear). Images are converted to RGB (alpha is dropped). The decoded arrays are cached
in ``<cache dir>/image-trees/`` keyed by the tree's file names, sizes and mtimes, so a changed tree
is decoded again.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import io
import multiprocessing
import operator
import os
import pickle
import re
import sys
import tarfile
import tempfile
import warnings
import zlib
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from cutmix.data.download import DownloadError, download_file

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

DATA_DIR_ENV = "CUTMIX_DATA_DIR"
CIFAR_URL_ENV = "CUTMIX_CIFAR_URL"
DEFAULT_CIFAR_URL = "https://www.cs.toronto.edu/~kriz"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 2000, 500
_CACHE_VERSION = 1
_MAX_MEMBER_BYTES = 1 << 30  # the largest official batch (CIFAR-100 train) is ~160 MB
_CHUNK = 256  # images per decode task: large enough to amortise IPC, small enough to balance


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


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a named dataset, and it could not (or may not) be downloaded."""


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


# --------------------------------------------------------------------------- entry point


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$CUTMIX_DATA_DIR``, else ``~/.cache/cutmix``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cutmix"


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
            raise ValueError(f"expected resize as (H, W), two positive integers, got {resize!r}")
        resize = (height, width)
    base, _, arg = text.partition(":")
    named = base.lower() == "synthetic" or text.lower() in _FORMATS_BY_NAME
    if named and resize is not None:
        raise ValueError(f"resize applies to image folders only, not to {text!r}")
    if base.lower() == "synthetic":
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise ValueError(f"expected synthetic:N with N a positive integer, got {text!r}")
        return make_synthetic(int(arg) if arg else SYNTHETIC_TRAIN, seed=seed)
    if text.lower() in _FORMATS_BY_NAME:
        return _load_named_cifar(
            _FORMATS_BY_NAME[text.lower()], default_cache_dir(cache_dir), progress, download
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise ValueError(
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
        raise ValueError(f"resize applies to image folders only, not to {path}")
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
        raise ValueError(
            f"{path} holds both CIFAR-10 and CIFAR-100; pass one of {', '.join(map(str, found))}"
        )
    if found and found[0].is_dir():
        return _read_cifar_folder(found[0], _FORMAT_OF_LOCAL_NAME[found[0].name])
    if found:
        return _read_cifar_tarball(found[0])
    raise ValueError(
        f"{path}: not a dataset folder; expected an image tree with train/ and test/ subfolders "
        "(ROOT/{train,test}/<class>/*.png|jpg|jpeg|bmp|webp), an extracted CIFAR folder "
        "(cifar-10-batches-py/, cifar-100-python/) or a folder holding one of those or their tarballs"
    )


# --------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarFormat:
    name: str
    folder: str
    tarballs: tuple[str, ...]  # the first is the official download's name, a key of CIFAR_MD5
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    class_key: str
    coarse_label_key: str | None = None
    coarse_class_key: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = _CifarFormat(
    name="cifar10",
    folder="cifar-10-batches-py",
    # Keras saves the official tarball as cifar-10-batches-py.tar.gz.
    tarballs=("cifar-10-python.tar.gz", "cifar-10-batches-py.tar.gz"),
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    class_key="label_names",
)
CIFAR100 = _CifarFormat(
    name="cifar100",
    folder="cifar-100-python",
    tarballs=("cifar-100-python.tar.gz",),
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    class_key="fine_label_names",
    coarse_label_key="coarse_labels",
    coarse_class_key="coarse_label_names",
)
_FORMATS = (CIFAR10, CIFAR100)
CIFAR_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}
_FORMATS_BY_NAME = {"cifar10": CIFAR10, "cifar-10": CIFAR10, "cifar100": CIFAR100, "cifar-100": CIFAR100}
_FORMAT_OF_LOCAL_NAME = {n: f for f in _FORMATS for n in (f.folder, *f.tarballs)}


def cifar_search_roots(cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched, in order, for a local CIFAR copy before downloading.

    The cache dir; ``~/.keras/datasets`` (Keras's ``cifar10.load_data()``); ``./data``,
    ``~/data`` and ``~/.torch/datasets`` (the roots torchvision examples pass most often). Each is
    checked for the extracted folder, then the tarball(s).
    """
    home = Path.home()
    roots = [
        default_cache_dir(cache_dir),
        home / ".keras" / "datasets",
        Path.cwd() / "data",
        home / "data",
        home / ".torch" / "datasets",
    ]
    return list(dict.fromkeys(roots))


def _load_named_cifar(fmt: _CifarFormat, cache_dir: Path, progress: bool, download: bool) -> Dataset:
    roots = cifar_search_roots(cache_dir)
    for root in roots:
        if (root / fmt.folder).is_dir():
            return _read_cifar_folder(root / fmt.folder, fmt)
        for tarball in fmt.tarballs:
            if (root / tarball).is_file():
                return _read_cifar_tarball(root / tarball)
    searched = "\n".join(f"  {root}/{{{', '.join((fmt.folder, *fmt.tarballs))}}}" for root in roots)
    hint = (
        "Pass --data PATH (Python: load_dataset(PATH)) to use a local copy: the official tarball, "
        f"its extracted folder or an image tree, or set ${DATA_DIR_ENV}."
    )
    base = os.environ.get(CIFAR_URL_ENV) or DEFAULT_CIFAR_URL
    url = f"{base.rstrip('/')}/{fmt.tarballs[0]}"
    if not download:
        raise DatasetNotFoundError(
            f"{fmt.name} not found locally; searched:\n{searched}\nand downloading is disabled. {hint}"
        )
    try:
        tarball = download_file(
            url, cache_dir / fmt.tarballs[0], CIFAR_MD5[fmt.tarballs[0]], progress=progress
        )
    except DownloadError as exc:
        raise DatasetNotFoundError(
            f"{fmt.name} not found locally; searched:\n{searched}\nand the download failed: {exc}\n{hint}"
        ) from exc
    return _read_cifar_tarball(tarball)


_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.int64(0).__reduce__()[0]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1"); admit nothing else.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # pickles written by numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _Refused(pickle.UnpicklingError):
    """A pickle that names a callable outside the allow-list."""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, strings, numbers and numpy arrays: no other callable can run."""

    def __init__(self, data: bytes, source: str) -> None:
        # encoding="bytes": the official batches are Python 2 pickles whose str keys become bytes.
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(
                f"{self._source}: refusing to load {module}.{name} (a CIFAR batch holds only "
                "numpy arrays, lists and dicts; this file is not one, or has been tampered with)"
            ) from None


def _unpickle_dict(data: bytes, source: str) -> dict[str, Any]:
    try:
        obj = _CifarUnpickler(data, source).load()
    except _Refused as exc:
        raise ValueError(str(exc)) from exc
    except Exception as exc:  # any failure to parse untrusted bytes is the file's fault
        raise ValueError(f"{source}: not a valid CIFAR pickle (truncated or corrupt?): {exc!r}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _parse_batch(
    obj: dict[str, Any], label_keys: dict[str, int], source: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """NHWC uint8 view of ``obj["data"]`` and one int64 array per ``label_keys`` (key -> class count)."""
    data = obj.get("data")
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        raise ValueError(
            f"{source}: expected 'data' as a uint8 array of shape (N, 3072), got {_describe(data)}"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # row-major RGB planes -> NHWC
    labels = []
    for key, num_classes in label_keys.items():
        if key not in obj:
            raise ValueError(f"{source}: missing key {key!r} (keys: {sorted(obj)})")
        try:
            values = np.asarray(obj[key])
        except Exception as exc:
            raise ValueError(f"{source}: {key!r} is not a list of integers") from exc
        if values.shape != (len(data),) or (len(data) and values.dtype.kind not in "iu"):
            raise ValueError(f"{source}: expected {key!r} as {len(data)} integers, got {_describe(values)}")
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{source}: {key!r} outside [0, {num_classes})")
        labels.append(values.astype(np.int64))
    return images, labels


def _parse_names(obj: dict[str, Any], key: str, source: str) -> list[str]:
    names = obj.get(key)
    if not (isinstance(names, list) and names and all(isinstance(n, bytes | str) for n in names)):
        raise ValueError(f"{source}: expected {key!r} as a list of class names, got {_describe(names)}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _assemble(fmt: _CifarFormat, objs: dict[str, dict[str, Any]], where: str, source: str) -> Dataset:
    missing = [name for name in fmt.files if name not in objs]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)} (expected the official {fmt.folder} layout)")
    meta = objs[fmt.meta_file]
    classes = _parse_names(meta, fmt.class_key, f"{where}/{fmt.meta_file}")
    coarse = (
        _parse_names(meta, fmt.coarse_class_key, f"{where}/{fmt.meta_file}") if fmt.coarse_class_key else None
    )
    label_keys = {fmt.label_key: len(classes)}
    if fmt.coarse_label_key and coarse:
        label_keys[fmt.coarse_label_key] = len(coarse)
    splits = {}
    for split, files in (("train", fmt.train_files), ("test", fmt.test_files)):
        parsed = [_parse_batch(objs[name], label_keys, f"{where}/{name}") for name in files]
        # An explicit C-ordered out: concatenating transposed views would keep their strides.
        images = np.empty((sum(len(p[0]) for p in parsed), 32, 32, 3), dtype=np.uint8)
        np.concatenate([p[0] for p in parsed], out=images)
        labels = [np.concatenate([p[1][i] for p in parsed]) for i in range(len(label_keys))]
        splits[split] = (images, labels)
    return Dataset(
        train_images=splits["train"][0],
        train_labels=splits["train"][1][0],
        test_images=splits["test"][0],
        test_labels=splits["test"][1][0],
        classes=classes,
        name=fmt.name,
        source=source,
        train_coarse_labels=splits["train"][1][1] if coarse else None,
        test_coarse_labels=splits["test"][1][1] if coarse else None,
        coarse_classes=coarse,
    )


def _read_cifar_folder(folder: Path, fmt: _CifarFormat) -> Dataset:
    objs = {}
    for name in fmt.files:
        path = folder / name
        if path.is_file():
            objs[name] = _unpickle_dict(path.read_bytes(), str(path))
    return _assemble(fmt, objs, str(folder), str(folder.resolve()))


def _read_cifar_tarball(path: Path) -> Dataset:
    """Read the batches straight out of the archive: nothing is extracted, so nothing is written."""
    objs: dict[str, dict[str, Any]] = {}
    fmts = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ValueError(
                        f"{path}: refusing unsafe member name {member.name!r} (absolute or '..')"
                    )
                parts = [p for p in name.parts if p != "."]
                fmt = _FORMAT_OF_LOCAL_NAME.get(parts[0]) if len(parts) == 2 else None
                if fmt is None or parts[0] != fmt.folder or parts[1] not in fmt.files or not member.isfile():
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise ValueError(
                        f"{path}: member {member.name} is {member.size} bytes, too big for CIFAR"
                    )
                fmts.add(fmt)
                if len(fmts) > 1:
                    raise ValueError(f"{path}: holds both CIFAR-10 and CIFAR-100 members")
                data = tar.extractfile(member).read()
                objs[parts[1]] = _unpickle_dict(data, f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ValueError(f"{path}: cannot read the tar archive (truncated or corrupt?): {exc}") from exc
    if not fmts:
        raise ValueError(
            f"{path}: no {CIFAR10.folder}/ or {CIFAR100.folder}/ batches inside; "
            "expected cifar-10-python.tar.gz or cifar-100-python.tar.gz"
        )
    fmt = fmts.pop()
    return _assemble(fmt, objs, f"{path}:{fmt.folder}", str(path.resolve()))


# --------------------------------------------------------------------------- image trees


def _scan_tree(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int, int, int]]]]:
    """Classes and, per split, sorted (path, label, size, mtime_ns) from directory stats alone."""
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise ValueError(
            f"{root}: missing {' and '.join(m + '/' for m in missing)}; "
            "expected ROOT/{train,test}/<class>/* image files"
        )
    classes: list[str] = []
    files: dict[str, list[tuple[str, int, int, int]]] = {}
    for split in ("train", "test"):
        with os.scandir(root / split) as it:
            names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        if not names:
            raise ValueError(f"{root / split}: no class folders")
        if split == "train":
            classes = names
        elif names != classes:
            diff = sorted(set(classes) ^ set(names))
            raise ValueError(f"{root}: train/ and test/ hold different class folders (differing: {diff})")
        entries = []
        for label, cls in enumerate(classes):
            with os.scandir(root / split / cls) as it:
                found = sorted(
                    (
                        e
                        for e in it
                        if not e.name.startswith(".")
                        and e.name.lower().endswith(IMAGE_EXTENSIONS)
                        and e.is_file()
                    ),
                    key=lambda e: e.name,
                )
            if not found:
                raise ValueError(
                    f"{root / split / cls}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)"
                )
            for e in found:
                st = e.stat()
                entries.append((e.path, label, st.st_size, st.st_mtime_ns))
        files[split] = entries
    return classes, files


def _load_image_tree(
    root: Path, cache_dir: Path, progress: bool, resize: tuple[int, int] | None, workers: int | None
) -> Dataset:
    root = root.resolve()
    classes, files = _scan_tree(root)
    key = hashlib.sha256(f"v{_CACHE_VERSION}\0{root}\0{resize}\0{classes}\n".encode())
    skip = len(str(root))  # every path starts with root: slicing is far cheaper than relpath
    key.update(
        "".join(
            f"{path[skip:]}\0{label}\0{size}\0{mtime}\n"
            for split in ("train", "test")
            for path, label, size, mtime in files[split]
        ).encode()
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name) or "root"
    prefix = f"{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}-"
    cache = cache_dir / "image-trees" / f"{prefix}{key.hexdigest()[:20]}.npz"
    arrays = _read_tree_cache(cache, classes, {s: len(f) for s, f in files.items()})
    if arrays is None:
        hw = resize or _image_hw(files["train"][0][0])
        arrays = {}
        for split in ("train", "test"):
            paths = [f[0] for f in files[split]]
            arrays[f"{split}_images"] = _decode_images(
                paths, hw, resize is not None, progress, workers, split
            )
            arrays[f"{split}_labels"] = np.array([f[1] for f in files[split]], dtype=np.int64)
        _write_tree_cache(cache, prefix, arrays, classes)
    return Dataset(classes=classes, name=root.name, source=str(root), **arrays)


def _read_tree_cache(path: Path, classes: list[str], counts: dict[str, int]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
            cached_classes = npz["classes"].tolist()
    except Exception as exc:  # a damaged cache is only a cache: decode again
        warnings.warn(f"ignoring unreadable cache {path}: {exc}", stacklevel=3)
        return None
    if cached_classes != classes or any(len(arrays[f"{s}_labels"]) != n for s, n in counts.items()):
        return None
    return arrays


def _write_tree_cache(path: Path, prefix: str, arrays: dict[str, np.ndarray], classes: list[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, classes=np.array(classes, dtype=str), **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        # Older decodings of this same tree (it has changed since) would only waste disk.
        for stale in path.parent.glob(f"{glob.escape(prefix)}*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not cache decoded images in {path}: {exc}", stacklevel=3)


def _image_hw(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as exc:
        raise ValueError(f"{path}: cannot read image: {exc}") from exc


def _decode_chunk(paths: list[str], hw: tuple[int, int], resize: bool) -> np.ndarray:
    """Decode ``paths`` to a uint8 array (len(paths), H, W, 3); runs in worker processes too."""
    out = np.empty((len(paths), *hw, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode_one(path, hw, resize)
    return out


def _decode_one(path: str, hw: tuple[int, int], resize: bool) -> np.ndarray:
    try:
        with Image.open(path) as im:
            size = (im.height, im.width)
            # The header alone gives the size: an odd (or huge) image is refused before decoding.
            if size == hw or resize:
                im.load()
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                if size != hw:
                    rgb = rgb.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                return np.asarray(rgb)
    except Exception as exc:
        raise ValueError(f"{path}: cannot decode image: {exc}") from exc
    raise ValueError(
        f"{path}: image is {size[0]}x{size[1]} but the others are {hw[0]}x{hw[1]} (HxW); "
        "pass resize=(H, W) to load_dataset to resize mixed sizes"
    )


def _decode_images(
    paths: list[str], hw: tuple[int, int], resize: bool, progress: bool, workers: int | None, split: str
) -> np.ndarray:
    out = np.empty((len(paths), *hw, 3), dtype=np.uint8)
    chunks = [(i, paths[i : i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tqdm(total=len(paths), unit="img", desc=f"decoding {split}", disable=not progress) as bar:
        # Opening a small image is mostly Python-level header parsing that holds the GIL, so
        # threads barely help and processes are used; tiny trees skip the pool's start-up cost.
        if workers <= 1 or len(chunks) < 4:
            for start, chunk in chunks:
                out[start : start + len(chunk)] = _decode_chunk(chunk, hw, resize)
                bar.update(len(chunk))
            return out
        # fork on Linux: workers need only PIL and numpy, and skip re-importing torch.
        context = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
            futures: dict[Future, tuple[int, int]] = {
                pool.submit(_decode_chunk, chunk, hw, resize): (start, len(chunk)) for start, chunk in chunks
            }
            try:
                for future in as_completed(futures):
                    start, n = futures[future]
                    out[start : start + n] = future.result()
                    bar.update(n)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return out


# --------------------------------------------------------------------------- synthetic


_SYNTHETIC_ANGLES = (0, 36, 72, 108, 144)
_SYNTHETIC_PERIODS = {"fine": 4.0, "coarse": 9.0}


def make_synthetic(n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, seed: int = 0) -> Dataset:
    """A learnable 10-class set of 32x32 RGB striped images, deterministic in ``seed``.

    Class = stripe orientation (5 angles, 36 degrees apart, jittered by +-6) x stripe period
    (fine ~4 px or coarse ~9 px, jittered by +-15%). Phase and the two stripe colours are random
    per image and uniform noise (std ~15) is added, so no single pixel or mean colour gives the
    class away, while a small CNN separates the classes within a couple of epochs (100% test
    accuracy after one epoch in our check). Classes are balanced.
    Returns uint8 images (N, 32, 32, 3) and int64 labels (N,) for both splits.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"expected n_train and n_test >= 1, got {n_train} and {n_test}")
    classes = [f"{kind}-{angle}deg" for kind in _SYNTHETIC_PERIODS for angle in _SYNTHETIC_ANGLES]
    splits = {}
    for index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        splits[split] = _synthetic_split(n, np.random.default_rng([seed, index]))
    return Dataset(
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        classes=classes,
        name="synthetic",
        source=f"synthetic(seed={seed}, train={n_train}, test={n_test})",
    )


def _synthetic_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_angles = len(_SYNTHETIC_ANGLES)
    labels = rng.permutation(np.arange(n) % (2 * n_angles)).astype(np.int64)
    angle = np.deg2rad(np.take(_SYNTHETIC_ANGLES, labels % n_angles) + rng.uniform(-6, 6, n))
    period = np.take(list(_SYNTHETIC_PERIODS.values()), labels // n_angles) * rng.uniform(0.85, 1.15, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    dark = rng.uniform(0, 110, (n, 3))
    light = rng.uniform(145, 255, (n, 3))
    swap = (rng.random(n) < 0.5)[:, None]
    low = np.where(swap, light, dark).astype(np.float32)[:, :, None, None]
    span = np.where(swap, dark - light, light - dark).astype(np.float32)[:, :, None, None]
    cos = (np.cos(angle) * 2 * np.pi / period).astype(np.float32)[:, None, None]
    sin = (np.sin(angle) * 2 * np.pi / period).astype(np.float32)[:, None, None]
    phase = phase.astype(np.float32)[:, None, None]
    y, x = np.mgrid[0:32, 0:32].astype(np.float32)
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    # Blocks of images, float32, channels-first: temporaries stay small enough to be reused
    # rather than freshly page-faulted, so synthetic:50000 takes about a second.
    for a in range(0, n, 512):
        b = min(a + 512, n)
        wave = cos[a:b] * x + sin[a:b] * y + phase[a:b]
        np.sin(wave, out=wave)
        wave *= 0.5
        wave += 0.5
        # Uniform noise from raw bytes (std ~15): several times cheaper than Gaussian draws.
        block = np.frombuffer(rng.bytes((b - a) * 3 * 32 * 32), dtype=np.uint8).reshape(b - a, 3, 32, 32)
        block = block.astype(np.float32)
        block -= 127.5
        block *= 0.2
        block += low[a:b]
        block += wave[:, None] * span[a:b]
        np.rint(block, out=block)
        np.clip(block, 0, 255, out=block)
        out[a:b] = block.transpose(0, 2, 3, 1)
    return out, labels
