"""Datasets: every input format round-trips through generated files; damaged or hostile input
fails with a ValueError naming the file and runs or writes nothing; image trees are cached and
re-decoded when they change; named CIFAR sets are found locally or downloaded, and fail clearly
offline."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutmix.data import datasets, imagetree
from cutmix.data.datasets import Dataset, DatasetNotFoundError, load_dataset, make_synthetic

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may see (or fill) the real ~/.keras, ~/.cache or ./data."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(datasets.CIFAR_URL_ENV, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


# --------------------------------------------------------------------------- fake CIFAR files


def pickled(obj: object, legacy: bool = False) -> bytes:
    return py2_pickle(obj) if legacy else pickle.dumps(obj, protocol=2)


def py2_pickle(batch: dict) -> bytes:
    """Protocol 2 as Python 2 and numpy 1.x wrote the official files: str as BINSTRING (bytes after
    ``encoding="bytes"``), arrays via numpy.core.multiarray._reconstruct. Values: uint8 arrays,
    ints, str/bytes, lists of those."""

    def text(value: str | bytes) -> bytes:
        raw = value if isinstance(value, bytes) else value.encode("latin1")
        return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<I", len(raw)) + raw

    def scalar(value: int | str | bytes) -> bytes:
        return b"J" + struct.pack("<i", value) if isinstance(value, int) else text(value)

    out = [b"\x80\x02}"]
    for key, value in batch.items():
        out.append(text(key))
        if isinstance(value, np.ndarray):
            assert value.dtype == np.uint8
            out += [b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", scalar(0), b"\x85"]
            out += [text("b"), b"\x87R(", scalar(1), b"(", *map(scalar, value.shape), b"t"]
            out += [b"cnumpy\ndtype\n", text("u1"), scalar(0), scalar(1), b"\x87R"]
            out += [b"(", scalar(3), text("|"), b"NNN", scalar(-1), scalar(-1), scalar(0), b"tb"]
            out += [b"\x89", text(value.tobytes()), b"tb"]
        elif isinstance(value, list):
            out += [b"](", *map(scalar, value), b"e"]
        else:
            out.append(scalar(value))
        out.append(b"s")
    return b"".join([*out, b"."])


def random_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def to_rows(images: np.ndarray) -> np.ndarray:
    """NHWC -> the official (N, 3072) rows: the R plane, then G, then B, each row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def cifar10_files(rng: np.random.Generator, n: int = 3, legacy: bool = False):
    """{file name: bytes} in the official cifar-10-batches-py layout, and the expected arrays."""
    files, train_x, train_y = {}, [], []
    for i in range(1, 6):
        x, y = random_images(rng, n), rng.integers(0, 10, n).tolist()
        files[f"data_batch_{i}"] = pickled(
            {
                b"batch_label": b"training batch",
                b"labels": y,
                b"data": to_rows(x),
                b"filenames": [b"a.png"] * n,
            },
            legacy,
        )
        train_x.append(x)
        train_y += y
    test_x, test_y = random_images(rng, n + 1), rng.integers(0, 10, n + 1).tolist()
    files["test_batch"] = pickled({b"labels": test_y, b"data": to_rows(test_x)}, legacy)
    meta = {b"label_names": [s.encode() for s in CIFAR10_NAMES], b"num_cases_per_batch": n, b"num_vis": 3072}
    files["batches.meta"] = pickled(meta, legacy)
    return files, (np.concatenate(train_x), np.array(train_y), test_x, np.array(test_y))


def cifar100_files(rng: np.random.Generator, n: int = 5):
    files, expected = {}, {}
    for split, m in (("train", n), ("test", n - 2)):
        x, fine, coarse = random_images(rng, m), rng.integers(0, 100, m), rng.integers(0, 20, m)
        files[split] = pickled(
            {b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(), b"data": to_rows(x)}
        )
        expected[split] = (x, fine, coarse)
    fine_names = [f"fine{i}".encode() for i in range(100)]
    files["meta"] = pickled(
        {b"fine_label_names": fine_names, b"coarse_label_names": [b"c%d" % i for i in range(20)]}
    )
    return files, expected


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_tarball(path: Path, top: str, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_cifar10(ds: Dataset, expected) -> None:
    train_x, train_y, test_x, test_y = expected
    assert ds.name == "cifar10" and ds.classes == CIFAR10_NAMES
    np.testing.assert_array_equal(ds.train_images, train_x)
    np.testing.assert_array_equal(ds.test_images, test_x)
    np.testing.assert_array_equal(ds.train_labels, train_y)
    np.testing.assert_array_equal(ds.test_labels, test_y)
    for images in (ds.train_images, ds.test_images):
        assert images.dtype == np.uint8 and images.flags.c_contiguous
    assert ds.train_labels.dtype == np.int64 and ds.coarse_classes is None and ds.train_coarse_labels is None


# --------------------------------------------------------------------------- CIFAR round trips


def test_cifar10_row_layout_is_rgb_planes(tmp_path: Path) -> None:
    rows = np.zeros((1, 3072), dtype=np.uint8)
    rows[0, 0], rows[0, 1], rows[0, 32], rows[0, 1024], rows[0, 2048 + 33] = 10, 20, 30, 40, 50
    files, _ = cifar10_files(np.random.default_rng(0))
    files["test_batch"] = pickled({b"labels": [3], b"data": rows})
    ds = load_dataset(write_folder(tmp_path / "cifar-10-batches-py", files))
    image = ds.test_images[0]
    assert (image[0, 0, 0], image[0, 1, 0], image[1, 0, 0], image[0, 0, 1], image[1, 1, 2]) == (
        10,
        20,
        30,
        40,
        50,
    )
    assert int(image.sum()) == 150


@pytest.mark.parametrize("legacy", [False, True])
def test_cifar10_folder_and_parent_folder(tmp_path: Path, legacy: bool) -> None:
    files, expected = cifar10_files(np.random.default_rng(1), legacy=legacy)
    folder = write_folder(tmp_path / "parent" / "cifar-10-batches-py", files)
    assert_cifar10(load_dataset(folder), expected)
    assert_cifar10(load_dataset(str(tmp_path / "parent")), expected)


def test_cifar10_tarball_read_without_extracting(tmp_path: Path) -> None:
    files, expected = cifar10_files(np.random.default_rng(2), legacy=True)
    tarball = write_tarball(tmp_path / "in" / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    before = sorted(p for p in tmp_path.rglob("*"))
    ds = load_dataset(tarball, cache_dir=tmp_path / "cache")
    assert_cifar10(ds, expected)
    assert ds.source == str(tarball.resolve())
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert_cifar10(load_dataset(tmp_path / "in"), expected)  # a folder holding the tarball


def test_cifar100_tarball_and_folder(tmp_path: Path) -> None:
    files, expected = cifar100_files(np.random.default_rng(3))
    tarball = write_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    folder = write_folder(tmp_path / "x" / "cifar-100-python", files)
    for ds in (load_dataset(tarball), load_dataset(folder)):
        assert ds.name == "cifar100" and len(ds.classes) == 100 and ds.classes[7] == "fine7"
        assert ds.coarse_classes == [f"c{i}" for i in range(20)]
        for split in ("train", "test"):
            x, fine, coarse = expected[split]
            np.testing.assert_array_equal(getattr(ds, f"{split}_images"), x)
            np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), fine)
            np.testing.assert_array_equal(getattr(ds, f"{split}_coarse_labels"), coarse)


# --------------------------------------------------------------------------- hostile input


class RunsCode:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
@pytest.mark.parametrize("container", ["folder", "tarball"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, how: str, container: str) -> None:
    marker = tmp_path / "pwned"
    payload = (
        RunsCode(os.system, f"touch {marker}")
        if how == "os.system"
        else RunsCode(exec, f"open({str(marker)!r}, 'w').close()")
    )
    files, _ = cifar10_files(np.random.default_rng(4))
    files["data_batch_2"] = pickle.dumps({b"data": payload, b"labels": []}, protocol=2)
    if container == "folder":
        spec = write_folder(tmp_path / "cifar-10-batches-py", files)
    else:
        spec = write_tarball(tmp_path / "c.tar.gz", "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match="refusing to load") as info:
        load_dataset(spec)
    assert "data_batch_2" in str(info.value)
    assert not marker.exists()


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, target, 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("evil", ["../evil", "/abs/evil", "cifar-10-batches-py/../../evil"])
def test_tar_path_traversal_is_refused(tmp_path: Path, evil: str) -> None:
    files, _ = cifar10_files(np.random.default_rng(5))
    work = tmp_path / "deep" / "work"
    tarball = write_tarball(work / "c.tar.gz", "cifar-10-batches-py", files, [member(evil)])
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="unsafe member") as info:
        load_dataset(tarball, cache_dir=work / "cache")
    assert str(tarball) in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/abs/evil").exists()


def test_tar_links_are_not_followed(tmp_path: Path) -> None:
    files, _ = cifar10_files(np.random.default_rng(6))
    del files["data_batch_3"]
    link = member("cifar-10-batches-py/data_batch_3", tarfile.SYMTYPE, "/etc/passwd")
    tarball = write_tarball(tmp_path / "c.tar.gz", "cifar-10-batches-py", files, [link])
    with pytest.raises(ValueError, match="missing data_batch_3"):
        load_dataset(tarball)


# --------------------------------------------------------------------------- damaged CIFAR input


def test_truncated_and_corrupt_tarballs(tmp_path: Path) -> None:
    files, _ = cifar10_files(np.random.default_rng(7))
    good = write_tarball(tmp_path / "good.tar.gz", "cifar-10-batches-py", files).read_bytes()
    cases = {
        "truncated.tar.gz": good[: len(good) // 2],
        "garbage.tar.gz": os.urandom(5000),
        "empty.tar.gz": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError) as info:
            load_dataset(path)
        assert str(path) in str(info.value), name
    unrelated = tmp_path / "unrelated.tar.gz"
    with tarfile.open(unrelated, "w:gz") as tar:
        tar.addfile(member("readme.txt"), io.BytesIO(b"text"))
    with pytest.raises(ValueError, match="no cifar-10-batches-py/ or cifar-100-python/"):
        load_dataset(unrelated)


def damaged_batches() -> dict[str, tuple[bytes, str]]:
    x = np.zeros((2, 3072), dtype=np.uint8)
    good = pickled({b"labels": [1, 2], b"data": x})
    return {
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "not a pickle": (b"hello world", "truncated or corrupt"),
        "a list": (pickled([1, 2, 3]), "expected a pickled dict"),
        "no data key": (pickled({b"labels": [1, 2]}), "'data'"),
        "wrong width": (pickled({b"labels": [1, 2], b"data": np.zeros((2, 100), np.uint8)}), r"\(N, 3072\)"),
        "wrong dtype": (pickled({b"labels": [1, 2], b"data": x.astype(np.float32)}), "uint8"),
        "no labels": (pickled({b"data": x}), "missing key 'labels'"),
        "short labels": (pickled({b"labels": [1], b"data": x}), "2 integers"),
        "label out of range": (pickled({b"labels": [1, 10], b"data": x}), r"outside \[0, 10\)"),
        "string labels": (pickled({b"labels": ["a", "b"], b"data": x}), "2 integers"),
    }


@pytest.mark.parametrize("case", sorted(damaged_batches()))
def test_damaged_batch_names_the_file(tmp_path: Path, case: str) -> None:
    data, message = damaged_batches()[case]
    files, _ = cifar10_files(np.random.default_rng(8))
    files["data_batch_4"] = data
    folder = write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset(folder)
    assert "data_batch_4" in str(info.value)


def test_missing_batch_and_bad_meta(tmp_path: Path) -> None:
    files, _ = cifar10_files(np.random.default_rng(9))
    missing = dict(files)
    del missing["data_batch_5"]
    with pytest.raises(ValueError, match="missing data_batch_5"):
        load_dataset(write_folder(tmp_path / "a" / "cifar-10-batches-py", missing))
    files["batches.meta"] = pickled({b"names": []})
    with pytest.raises(ValueError, match="batches.meta.*label_names"):
        load_dataset(write_folder(tmp_path / "b" / "cifar-10-batches-py", files))


# --------------------------------------------------------------------------- named CIFAR: search, download, offline


@contextlib.contextmanager
def serve(files: dict[str, bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, server.shutdown)  # stops by itself even if a test hangs
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/base"
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    "place",
    [
        "cache/cifar-10-batches-py",
        "home/.keras/datasets/cifar-10-batches-py",
        "home/.keras/datasets/cifar-10-batches-py.tar.gz",
        "cwd/data/cifar-10-python.tar.gz",
        "home/data/cifar-10-batches-py",
        "home/.torch/datasets/cifar-10-python.tar.gz",
    ],
)
def test_named_cifar_reuses_local_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, place: str) -> None:
    files, expected = cifar10_files(np.random.default_rng(10))
    target = tmp_path / place
    if target.name.endswith(".tar.gz"):
        write_tarball(target, "cifar-10-batches-py", files)
    else:
        write_folder(target, files)
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "cache"))
    assert_cifar10(load_dataset("cifar10", download=False), expected)


def test_cache_dir_argument_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "env"))
    assert datasets.default_cache_dir() == tmp_path / "env"
    assert datasets.default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.default_cache_dir() == tmp_path / "home" / ".cache" / "cutmix"


def test_named_cifar_downloads_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, expected = cifar100_files(np.random.default_rng(11))
    blob = write_tarball(tmp_path / "srv.tar.gz", "cifar-100-python", files).read_bytes()
    monkeypatch.setitem(datasets.CIFAR_MD5, "cifar-100-python.tar.gz", hashlib.md5(blob).hexdigest())
    cache = tmp_path / "cache"
    with serve({"/base/cifar-100-python.tar.gz": blob}) as base:
        monkeypatch.setenv(datasets.CIFAR_URL_ENV, base)
        ds = load_dataset("cifar100", cache_dir=cache, progress=False)
    assert ds.name == "cifar100"
    np.testing.assert_array_equal(ds.train_images, expected["train"][0])
    assert (cache / "cifar-100-python.tar.gz").read_bytes() == blob
    # The server is gone: the cached tarball is found locally.
    assert load_dataset("cifar100", cache_dir=cache, download=False).name == "cifar100"


def test_named_cifar_checksum_mismatch_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = cifar10_files(np.random.default_rng(12))
    blob = write_tarball(tmp_path / "srv.tar.gz", "cifar-10-batches-py", files).read_bytes()
    cache = tmp_path / "cache"
    with serve({"/base/cifar-10-python.tar.gz": blob}) as base:
        monkeypatch.setenv(datasets.CIFAR_URL_ENV, base)
        with pytest.raises(DatasetNotFoundError, match="checksum mismatch"):
            load_dataset("cifar10", cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


@pytest.mark.timeout(30)
def test_offline_lists_places_and_suggests_data_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(datasets.CIFAR_URL_ENV, f"http://127.0.0.1:{port}")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", cache_dir=cache, progress=False)
    message = str(info.value)
    for root in datasets.cifar_search_roots(cache):
        assert str(root) in message
    assert "--data PATH" in message and f"127.0.0.1:{port}" in message
    assert isinstance(info.value, FileNotFoundError)
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(DatasetNotFoundError, match="downloading is disabled"):
        load_dataset("cifar100", cache_dir=cache, download=False)


# --------------------------------------------------------------------------- image trees


def write_tree(root: Path, counts: dict[str, dict[str, int]], ext: str = "png", size=(8, 6), seed=0) -> dict:
    """ROOT/split/class/NNN.ext random images; returns {split: [(class, array), ...]} in sorted order."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, per_class in counts.items():
        written[split] = []
        for cls in sorted(per_class):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class[cls]):
                # A flat random colour plus mild noise: distinct per image, yet JPEG-friendly.
                noise = rng.integers(-8, 9, (*size, 3))
                pixels = np.clip(rng.integers(20, 236, 3) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:03d}.{ext}", quality=95)
                written[split].append((cls, pixels))
    return written


@pytest.mark.parametrize("ext", ["png", "bmp", "jpg"])
def test_image_tree_round_trip(tmp_path: Path, ext: str) -> None:
    counts = {"train": {"dog": 3, "cat": 2, "bird": 1}, "test": {"dog": 1, "cat": 1, "bird": 2}}
    written = write_tree(tmp_path / "tree", counts, ext, size=(8, 6))
    (tmp_path / "tree" / "train" / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "tree" / "train" / "cat" / f".hidden.{ext}").write_bytes(b"ignored too")
    ds = load_dataset(tmp_path / "tree", cache_dir=tmp_path / "cache", progress=False)
    assert ds.classes == ["bird", "cat", "dog"] and ds.name == "tree"
    assert ds.train_images.shape == (6, 8, 6, 3) and ds.test_images.shape == (4, 8, 6, 3)
    for split in ("train", "test"):
        labels = getattr(ds, f"{split}_labels")
        images = getattr(ds, f"{split}_images")
        assert labels.tolist() == [ds.classes.index(cls) for cls, _ in written[split]]
        for got, (_, want) in zip(images, written[split], strict=True):
            if ext == "jpg":  # lossy: close, not equal
                assert np.abs(got.astype(int) - want.astype(int)).mean() < 8
            else:
                np.testing.assert_array_equal(got, want)


def test_image_tree_converts_modes_to_rgb(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        Image.new("L", (4, 4), 77).save(root / split / "a" / "gray.png")
        Image.new("RGBA", (4, 4), (1, 2, 3, 0)).save(root / split / "a" / "rgba.png")
        Image.new("P", (4, 4), 0).save(root / split / "a" / "palette.webp")
    ds = load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    assert ds.train_images.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(ds.train_images[0], np.full((4, 4, 3), 77))
    np.testing.assert_array_equal(ds.train_images[2], np.broadcast_to([1, 2, 3], (4, 4, 3)))


SIXTEEN_BIT = np.array([[0, 255, 256, 511, 32768], [40000, 65280, 65535, 1000, 12345]], dtype=np.uint16)


def test_sixteen_bit_grey_images_keep_their_high_byte(tmp_path: Path) -> None:
    """A 16-bit PNG opens as mode I;16; Pillow's convert("RGB") clips it to white (every value above
    255). Each value v must become v >> 8 in all three channels, whatever the 16-bit mode."""
    expected = np.repeat((SIXTEEN_BIT >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    raw = {"I;16": SIXTEEN_BIT, "I;16L": SIXTEEN_BIT.astype("<u2"), "I;16B": SIXTEEN_BIT.astype(">u2"),
           "I": SIXTEEN_BIT.astype(np.int32)}  # fmt: skip
    for mode, values in raw.items():
        image = Image.frombytes(mode, (5, 2), values.tobytes())
        np.testing.assert_array_equal(np.asarray(imagetree.to_rgb(image, "x.png")), expected, err_msg=mode)
    # Values no 16-bit image holds, and float pixels, have no range to scale from: refused by name.
    with pytest.raises(ValueError, match=r"x.tif: expected 32-bit integer pixels within 0..65535"):
        imagetree.to_rgb(Image.frombytes("I", (1, 1), np.array([70000], np.int32).tobytes()), "x.tif")
    with pytest.raises(ValueError, match=r"x.tif: expected 8- or 16-bit pixels, got 32-bit float"):
        imagetree.to_rgb(Image.new("F", (1, 1), 0.5), "x.tif")


def test_image_tree_of_sixteen_bit_pngs_is_not_white(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    rng = np.random.default_rng(3)
    written = []
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            values = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
            Image.fromarray(values).save(root / split / cls / "x.png")
            written.append(values)
    with Image.open(root / "train" / "a" / "x.png") as image:
        assert image.mode == "I;16"  # what a 16-bit grey PNG decodes as
    ds = load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    for got, values in zip([*ds.train_images, *ds.test_images], written, strict=True):
        np.testing.assert_array_equal(got, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1))


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_image_tree_cache_gets_the_mode_the_umask_gives(tmp_path: Path) -> None:
    root, cache = tmp_path / "tree", tmp_path / "cache"
    write_tree(root, {"train": {"a": 1}, "test": {"a": 1}})
    before = os.umask(0o027)
    try:
        load_dataset(root, cache_dir=cache, progress=False)
    finally:
        os.umask(before)
    (npz,) = (cache / "image-trees").glob("*.npz")
    assert oct(npz.stat().st_mode & 0o777) == oct(0o666 & ~0o027)


def test_a_file_that_is_not_a_data_set_is_one_line_naming_what_it_is(tmp_path: Path) -> None:
    photo = tmp_path / "fake.jpg"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(photo)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not a tar archive")
    for path, what in ((photo, "got an image file; to classify single images, use cutmix predict"),
                       (text, "got a file that is not a tar archive"),
                       (archive, "cannot read the tar archive (truncated or corrupt?): not a tar")):  # fmt: skip
        with pytest.raises(ValueError) as info:
            load_dataset(path)
        message = str(info.value)
        assert message.startswith(str(path)) and what in message and "\n" not in message, message


def test_image_tree_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "tree", tmp_path / "cache"
    write_tree(root, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    decoded = []
    real_decode = imagetree._decode_images
    monkeypatch.setattr(
        imagetree,
        "_decode_images",
        lambda paths, *a, **k: decoded.append(len(paths)) or real_decode(paths, *a, **k),
    )
    first = load_dataset(root, cache_dir=cache, progress=False)
    assert decoded == [4, 2]
    cached = list((cache / "image-trees").glob("*.npz"))
    assert len(cached) == 1

    second = load_dataset(root, cache_dir=cache, progress=False)
    assert decoded == [4, 2]  # served from the cache
    np.testing.assert_array_equal(second.train_images, first.train_images)
    assert second.classes == first.classes

    changed = root / "train" / "b" / "001.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    load_dataset(root, cache_dir=cache, progress=False)
    assert decoded == [4, 2, 4, 2]
    assert [p.name for p in (cache / "image-trees").glob("*.npz")] != [p.name for p in cached]
    assert len(list((cache / "image-trees").glob("*.npz"))) == 1  # the stale one is gone

    new_pixels = np.full((8, 6, 3), 200, dtype=np.uint8)
    Image.fromarray(new_pixels).save(root / "train" / "a" / "999.png")
    grown = load_dataset(root, cache_dir=cache, progress=False)
    assert decoded == [4, 2, 4, 2, 5, 2]
    assert len(grown.train_images) == 5
    np.testing.assert_array_equal(grown.train_images[2], new_pixels)  # sorted: a/000, a/001, a/999
    assert not list((cache / "image-trees").glob("*.part"))


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    root, cache = tmp_path / "tree", tmp_path / "cache"
    write_tree(root, {"train": {"a": 2}, "test": {"a": 1}})
    first = load_dataset(root, cache_dir=cache, progress=False)
    (npz,) = (cache / "image-trees").glob("*.npz")
    npz.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring unreadable cache"):
        again = load_dataset(root, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.train_images, first.train_images)


def test_parallel_decoding_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    write_tree(root, {"train": {"a": 9, "b": 8}, "test": {"a": 2, "b": 2}})
    monkeypatch.setattr(imagetree, "_CHUNK", 3)  # several chunks, so the process pool is used
    parallel = load_dataset(root, cache_dir=tmp_path / "c1", progress=False, workers=2)
    serial = load_dataset(root, cache_dir=tmp_path / "c2", progress=False, workers=1)
    np.testing.assert_array_equal(parallel.train_images, serial.train_images)
    np.testing.assert_array_equal(parallel.test_images, serial.test_images)
    (root / "train" / "b" / "005.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="005.png"):
        load_dataset(root, cache_dir=tmp_path / "c3", progress=False, workers=2)


def test_mixed_sizes_raise_unless_resized(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_tree(root, {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 1}}, size=(8, 8))
    Image.new("RGB", (5, 7)).save(root / "train" / "b" / "odd.png")
    with pytest.raises(ValueError, match="odd.png.*7x5.*8x8") as info:
        load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    assert "resize" in str(info.value)
    ds = load_dataset(root, cache_dir=tmp_path / "cache", progress=False, resize=(4, 6))
    assert ds.train_images.shape == (4, 4, 6, 3) and ds.test_images.shape == (2, 4, 6, 3)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("unreadable", "bad.png: cannot decode"),
        ("truncated", "cut.jpg: cannot decode"),
        ("empty class", "empty class folder"),
        ("no test", "missing test/"),
        ("class mismatch", "different class folders"),
        ("no classes", "no class folders"),
    ],
)
def test_damaged_trees(tmp_path: Path, damage: str, message: str) -> None:
    root = tmp_path / "tree"
    write_tree(root, {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 1}}, ext="jpg")
    if damage == "unreadable":
        (root / "test" / "b" / "bad.png").write_bytes(b"\x89PNG garbage")
    elif damage == "truncated":
        data = (root / "train" / "a" / "000.jpg").read_bytes()
        (root / "train" / "a" / "cut.jpg").write_bytes(data[: len(data) // 2])
    elif damage == "empty class":
        (root / "train" / "c").mkdir()
        (root / "test" / "c").mkdir()
    elif damage == "no test":
        os.rename(root / "test", tmp_path / "elsewhere")
    elif damage == "class mismatch":
        os.rename(root / "test" / "b", root / "test" / "z")
    else:
        os.rename(root / "train", tmp_path / "elsewhere")
        (root / "train").mkdir()
    with pytest.raises(ValueError, match=message) as info:
        load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    assert str(root) in str(info.value)


# --------------------------------------------------------------------------- synthetic, specs, Dataset


def test_synthetic_is_deterministic_balanced_and_sized() -> None:
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.train_images.shape == (2000, 32, 32, 3) and a.test_images.shape == (500, 32, 32, 3)
    assert a.train_images.dtype == np.uint8 and a.train_labels.dtype == np.int64
    assert np.bincount(a.train_labels).tolist() == [200] * 10 and len(a.classes) == 10
    assert not np.array_equal(a.train_images[:500], a.test_images)
    ds = load_dataset("synthetic:120", seed=3)
    assert len(ds.train_images) == 120 and ds.name == "synthetic"


def test_synthetic_class_is_not_in_any_single_pixel() -> None:
    ds = make_synthetic(4000, seed=0)
    x = ds.train_images.reshape(len(ds.train_images), -1).astype(np.float64)
    class_means = np.stack([x[ds.train_labels == k].mean(axis=0) for k in range(10)])
    # Per pixel and channel: how far apart the class means are, relative to the spread within.
    separation = class_means.std(axis=0) / x.std(axis=0)
    assert separation.max() < 0.15
    # ...while the classes do differ in structure: neighbouring-pixel correlation along x.
    img = ds.train_images.astype(np.float64).mean(axis=3)
    corr_x = ((img[:, :, 1:] - 127) * (img[:, :, :-1] - 127)).mean(axis=(1, 2))
    per_class = np.array([corr_x[ds.train_labels == k].mean() for k in range(10)])
    assert per_class.std() > 5 * (corr_x.std() / np.sqrt(400))


@pytest.mark.parametrize("spec", ["synthetic:0", "synthetic:abc", "synthetic:-3", "no/such/path", "cifar11"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"expected"):
        load_dataset(spec)


def test_resize_only_for_image_trees() -> None:
    with pytest.raises(ValueError, match="image folders only"):
        load_dataset("synthetic", resize=(16, 16))
    with pytest.raises(ValueError, match="resize"):
        load_dataset(str(Path.cwd()), resize=(0, 16))


def test_dataset_validates_and_has_a_short_repr() -> None:
    ds = make_synthetic(20, 10)
    assert "train=20" in repr(ds) and "array" not in repr(ds)
    assert ds.num_classes == 10 and ds.image_shape == (32, 32, 3)
    fields = dict(
        train_images=ds.train_images,
        train_labels=ds.train_labels,
        test_images=ds.test_images,
        test_labels=ds.test_labels,
        classes=ds.classes,
        name="x",
        source="y",
    )
    with pytest.raises(ValueError, match="train_images"):
        Dataset(**{**fields, "train_images": ds.train_images.astype(np.float32)})
    with pytest.raises(ValueError, match="test_labels"):
        Dataset(**{**fields, "test_labels": ds.test_labels[:-1]})
    with pytest.raises(ValueError, match="train_labels"):
        Dataset(**{**fields, "classes": ds.classes[:3]})
    with pytest.raises(ValueError, match="together"):
        Dataset(**fields, coarse_classes=["c"])


# --------------------------------------------------------------------------- the real tree


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} not present")
def test_real_cifar10_jpeg_tree(tmp_path: Path) -> None:
    # Decodes all 60,000 JPEGs (about 15-30 s on two cores), then loads them back from the cache.
    ds = load_dataset(REAL_DATA, cache_dir=tmp_path / "cache", progress=False)
    assert ds.train_images.shape == (50000, 32, 32, 3) and ds.test_images.shape == (10000, 32, 32, 3)
    assert ds.classes == CIFAR10_NAMES
    assert np.bincount(ds.train_labels).tolist() == [5000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    again = load_dataset(REAL_DATA, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.test_images, ds.test_images)
