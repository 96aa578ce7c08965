"""Image-folder trees ``ROOT/{train,test}/<class>/*.{png,jpg,jpeg,bmp,webp}``: scanning, parallel
decoding and the cache of decoded arrays.

Classes are the sorted folder names, files are taken in sorted name order (hidden files and
other extensions are ignored). All images must share one size, otherwise loading fails naming a
file of the odd size, unless ``resize=(H, W)`` is given, which resizes every image that differs
(bilinear). Images are converted to 8-bit RGB (alpha is dropped; 16-bit pixels keep their high
byte, see :func:`to_rgb`). The decoded arrays are cached in
``<cache dir>/image-trees/`` keyed by the tree's file names, sizes and mtimes, so a changed tree
is decoded again.
"""

from __future__ import annotations

import glob
import hashlib
import multiprocessing
import os
import re
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cutmix.data.base import Dataset
from cutmix.errors import DataError
from cutmix.runinfo import atomic_file

__all__ = ["IMAGE_EXTENSIONS", "to_rgb"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# 2: 16-bit images are scaled to 8 bits (version 1 cached them as white), so older caches are stale.
_CACHE_VERSION = 2
_CHUNK = 256  # images per decode task: large enough to amortise IPC, small enough to balance


def _scan_tree(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int, int, int]]]]:
    """Classes and, per split, sorted (path, label, size, mtime_ns) from directory stats alone."""
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root}: missing {' and '.join(m + '/' for m in missing)}; "
            "expected ROOT/{train,test}/<class>/* image files"
        )
    classes: list[str] = []
    files: dict[str, list[tuple[str, int, int, int]]] = {}
    for split in ("train", "test"):
        with os.scandir(root / split) as it:
            names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        if not names:
            raise DataError(f"{root / split}: no class folders")
        if split == "train":
            classes = names
        elif names != classes:
            diff = sorted(set(classes) ^ set(names))
            raise DataError(f"{root}: train/ and test/ hold different class folders (differing: {diff})")
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
                raise DataError(
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
        with atomic_file(path, suffix=".part") as f:
            np.savez(f, classes=np.array(classes, dtype=str), **arrays)
        # Older decodings of this same tree (it has changed since) would only waste disk.
        for stale in path.parent.glob(f"{glob.escape(prefix)}*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not cache decoded images in {path}: {exc}", stacklevel=3)


def to_rgb(image: Image.Image, source: str) -> Image.Image:
    """``image`` as 8-bit RGB (``source`` names the file in errors).

    16-bit grey images (modes ``I;16``, ``I;16B``, ``I;16L``, ..., as 16-bit PNGs and TIFFs decode,
    and ``I`` holding values in 0..65535) keep the high byte of each value (``v >> 8``: 65535 -> 255,
    256 -> 1, 255 -> 0), what 16-bit colour PNGs get from Pillow too; Pillow's own ``convert("RGB")``
    clips them, turning almost every pixel white. ``I`` values outside 0..65535 and float (``F``)
    pixels have no range to scale from and are refused.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise DataError(
                f"{source}: expected 32-bit integer pixels within 0..65535 (16-bit values), "
                f"got {values.min()}..{values.max()}"
            )
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(grey)).convert("RGB")
    if mode == "F":
        raise DataError(f"{source}: expected 8- or 16-bit pixels, got 32-bit float pixels (mode F)")
    return image.convert("RGB")


def _image_hw(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from exc


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
                rgb = to_rgb(im, path)
                if size != hw:
                    rgb = rgb.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                return np.asarray(rgb)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot decode image: {exc}") from exc
    raise DataError(
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
