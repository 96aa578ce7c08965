"""CIFAR-10/100 in the official python format: tarballs, extracted folders, local copies, download.

Accepted: an official tarball (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``), read in
place without extracting anything, or an extracted folder (``cifar-10-batches-py/``,
``cifar-100-python/``).

For the names ``cifar10``/``cifar100`` local copies are looked for first, in this order (see
:func:`cifar_search_roots`): the cache dir, ``~/.keras/datasets`` (where Keras keeps
``cifar-10-batches-py/``), then the usual torchvision roots ``./data``, ``~/data`` and
``~/.torch/datasets``. Only if none holds a copy is the official tarball downloaded into the cache
dir, MD5-verified. Local copies are checked by structure, not checksum, so re-packed copies work.

Untrusted input stays data: CIFAR pickles go through an unpickler that admits only numpy array
reconstruction, and tarball members are read in memory, never extracted (absolute or ``..`` names
are refused outright). Damaged input raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cutmix.data.base import DATA_DIR_ENV, Dataset, DatasetNotFoundError, _describe, default_cache_dir
from cutmix.data.download import DownloadError, download_file
from cutmix.errors import DataError

__all__ = ["CIFAR10", "CIFAR100", "CIFAR_MD5", "CIFAR_URL_ENV", "cifar_search_roots"]

CIFAR_URL_ENV = "CUTMIX_CIFAR_URL"
DEFAULT_CIFAR_URL = "https://www.cs.toronto.edu/~kriz"
_MAX_MEMBER_BYTES = 1 << 30  # the largest official batch (CIFAR-100 train) is ~160 MB


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
        raise DataError(str(exc)) from exc
    except Exception as exc:  # any failure to parse untrusted bytes is the file's fault
        raise DataError(f"{source}: not a valid CIFAR pickle (truncated or corrupt?): {exc!r}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _parse_batch(
    obj: dict[str, Any], label_keys: dict[str, int], source: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """NHWC uint8 view of ``obj["data"]`` and one int64 array per ``label_keys`` (key -> class count)."""
    data = obj.get("data")
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        raise DataError(
            f"{source}: expected 'data' as a uint8 array of shape (N, 3072), got {_describe(data)}"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # row-major RGB planes -> NHWC
    labels = []
    for key, num_classes in label_keys.items():
        if key not in obj:
            raise DataError(f"{source}: missing key {key!r} (keys: {sorted(obj)})")
        try:
            values = np.asarray(obj[key])
        except Exception as exc:
            raise DataError(f"{source}: {key!r} is not a list of integers") from exc
        if values.shape != (len(data),) or (len(data) and values.dtype.kind not in "iu"):
            raise DataError(f"{source}: expected {key!r} as {len(data)} integers, got {_describe(values)}")
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise DataError(f"{source}: {key!r} outside [0, {num_classes})")
        labels.append(values.astype(np.int64))
    return images, labels


def _parse_names(obj: dict[str, Any], key: str, source: str) -> list[str]:
    names = obj.get(key)
    if not (isinstance(names, list) and names and all(isinstance(n, bytes | str) for n in names)):
        raise DataError(f"{source}: expected {key!r} as a list of class names, got {_describe(names)}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _assemble(fmt: _CifarFormat, objs: dict[str, dict[str, Any]], where: str, source: str) -> Dataset:
    missing = [name for name in fmt.files if name not in objs]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (expected the official {fmt.folder} layout)")
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


_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# How image files begin (PNG, JPEG, GIF, BMP, WebP's RIFF, TIFF both byte orders).
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (tarfile lists one reason per compression method, a line each)."""
    return "; ".join(line.strip(" -") for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _not_a_tarball(path: Path, exc: tarfile.ReadError) -> str:
    """Why ``path`` (a file tarfile cannot open) is not a data set, on one line."""
    if not str(exc).startswith("file could not be opened successfully"):  # a tar damaged inside
        return f"{path}: cannot read the tar archive (truncated or corrupt?): {_one_line(exc)}"
    if path.name.lower().endswith(_TAR_SUFFIXES):
        reason = "not a tar, tar.gz, tar.bz2 or tar.xz file"
        return f"{path}: cannot read the tar archive (truncated or corrupt?): {reason}"
    with open(path, "rb") as handle:
        head = handle.read(8)
    what = "an image file" if head.startswith(_IMAGE_MAGIC) else "a file that is not a tar archive"
    hint = "; to classify single images, use cutmix predict" if what == "an image file" else ""
    return (
        f"{path}: expected a data set (a CIFAR tarball such as cifar-10-python.tar.gz, an extracted "
        f"CIFAR folder, or an image tree folder ROOT/{{train,test}}/<class>/), got {what}{hint}"
    )


def _read_cifar_tarball(path: Path) -> Dataset:
    """Read the batches straight out of the archive: nothing is extracted, so nothing is written."""
    objs: dict[str, dict[str, Any]] = {}
    fmts = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise DataError(f"{path}: refusing unsafe member name {member.name!r} (absolute or '..')")
                parts = [p for p in name.parts if p != "."]
                fmt = _FORMAT_OF_LOCAL_NAME.get(parts[0]) if len(parts) == 2 else None
                if fmt is None or parts[0] != fmt.folder or parts[1] not in fmt.files or not member.isfile():
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise DataError(f"{path}: member {member.name} is {member.size} bytes, too big for CIFAR")
                fmts.add(fmt)
                if len(fmts) > 1:
                    raise DataError(f"{path}: holds both CIFAR-10 and CIFAR-100 members")
                data = tar.extractfile(member).read()
                objs[parts[1]] = _unpickle_dict(data, f"{path}:{member.name}")
    except tarfile.ReadError as exc:
        raise DataError(_not_a_tarball(path, exc)) from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{path}: cannot read the tar archive (truncated or corrupt?): {_one_line(exc)}"
        ) from exc
    if not fmts:
        raise DataError(
            f"{path}: no {CIFAR10.folder}/ or {CIFAR100.folder}/ batches inside; "
            "expected cifar-10-python.tar.gz or cifar-100-python.tar.gz"
        )
    fmt = fmts.pop()
    return _assemble(fmt, objs, f"{path}:{fmt.folder}", str(path.resolve()))
