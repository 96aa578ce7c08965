"""Verified downloads against a throwaway HTTP server on 127.0.0.1: success, checksum mismatch,
truncated transfer, HTTP errors, dead or silent hosts and a full disk all leave nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest

from cutmix.data.download import DownloadError, download_file, md5sum

PAYLOAD = os.urandom(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@contextlib.contextmanager
def serve(routes: dict[str, tuple[bytes, int | None]]):
    """Serve ``routes`` (path -> (body, announced Content-Length or None for the true one)) on
    127.0.0.1; yields (base URL, list of requested paths). Stops on exit, and on its own after
    60 s even if a test hangs."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5

        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, announced = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if announced is None else announced))
            self.end_headers()
            # With a longer announced length this ends the response early: the connection closes.
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_publishes(tmp_path: Path) -> None:
    with serve({"/f.bin": (PAYLOAD, None)}) as (base, requests):
        dest = download_file(f"{base}/f.bin", tmp_path / "sub" / "f.bin", PAYLOAD_MD5.upper(), progress=False)
        assert dest == tmp_path / "sub" / "f.bin"
        assert dest.read_bytes() == PAYLOAD
        assert leftovers(dest.parent) == ["f.bin"]
        # A verified copy is reused, not fetched again.
        download_file(f"{base}/f.bin", dest, PAYLOAD_MD5, progress=False)
        assert requests == ["/f.bin"]
    assert md5sum(dest) == PAYLOAD_MD5


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_download_gets_the_mode_the_umask_gives(tmp_path: Path) -> None:
    before = os.umask(0o002)
    try:
        with serve({"/f.bin": (PAYLOAD, None)}) as (base, _):
            dest = download_file(f"{base}/f.bin", tmp_path / "f.bin", PAYLOAD_MD5, progress=False)
    finally:
        os.umask(before)
    assert oct(dest.stat().st_mode & 0o777) == oct(0o664)  # mkstemp made it 0o600


def test_download_replaces_a_bad_existing_copy(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    with serve({"/f.bin": (PAYLOAD, None)}) as (base, _):
        download_file(f"{base}/f.bin", dest, PAYLOAD_MD5, progress=True)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    corrupt = bytearray(PAYLOAD)
    corrupt[1000] ^= 0xFF
    with (
        serve({"/f.bin": (bytes(corrupt), None)}) as (base, _),
        pytest.raises(DownloadError, match="checksum mismatch") as info,
    ):
        download_file(f"{base}/f.bin", tmp_path / "f.bin", PAYLOAD_MD5, progress=False)
    assert f"{base}/f.bin" in str(info.value)
    assert leftovers(tmp_path) == []


def test_truncated_transfer_leaves_nothing(tmp_path: Path) -> None:
    half = PAYLOAD[: len(PAYLOAD) // 2]
    with (
        serve({"/f.bin": (half, len(PAYLOAD))}) as (base, _),
        pytest.raises(DownloadError, match="truncated") as info,
    ):
        download_file(f"{base}/f.bin", tmp_path / "f.bin", hashlib.md5(half).hexdigest(), progress=False)
    assert f"{base}/f.bin" in str(info.value)
    assert leftovers(tmp_path) == []


def test_http_error_leaves_nothing(tmp_path: Path) -> None:
    with serve({}) as (base, _), pytest.raises(DownloadError, match="404"):
        download_file(f"{base}/missing.bin", tmp_path / "f.bin", PAYLOAD_MD5, progress=False)
    assert leftovers(tmp_path) == []


@pytest.mark.timeout(30)
def test_connection_refused_fails_fast(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/f.bin"
    with pytest.raises(DownloadError, match="cannot reach") as info:
        download_file(url, tmp_path / "f.bin", PAYLOAD_MD5, progress=False)
    assert url in str(info.value)
    assert leftovers(tmp_path) == []


def test_a_failed_download_is_an_os_error_with_the_message_as_its_text(tmp_path: Path) -> None:
    # cli.main prints OSError as one line; the text must be the message alone, as for any OSError.
    url = f"http://127.0.0.1:{closed_port()}/f.bin"
    with pytest.raises(OSError) as info:
        download_file(url, tmp_path / "f.bin", PAYLOAD_MD5, progress=False)
    assert isinstance(info.value, DownloadError)
    assert str(info.value).startswith(f"cannot reach {url}: ")


@pytest.mark.timeout(30)
def test_silent_server_times_out(tmp_path: Path) -> None:
    # The kernel completes the handshake for a listening socket that never accepts or answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/f.bin"
        with pytest.raises(DownloadError, match="timed out"):
            download_file(url, tmp_path / "f.bin", PAYLOAD_MD5, timeout=0.5, progress=False)
    assert leftovers(tmp_path) == []


def test_full_disk_leaves_nothing(tmp_path: Path) -> None:
    resource = pytest.importorskip("resource")
    signal = pytest.importorskip("signal")
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("no SIGXFSZ on this platform")
    # A file-size limit makes write() fail with a real OSError (EFBIG) part-way, as a full disk does.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with serve({"/f.bin": (PAYLOAD, None)}) as (base, _):
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
        try:
            with pytest.raises(DownloadError, match="cannot write") as info:
                download_file(f"{base}/f.bin", tmp_path / "f.bin", PAYLOAD_MD5, progress=False)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
    assert str(tmp_path / "f.bin") in str(info.value)
    assert leftovers(tmp_path) == []


def test_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DownloadError, match="cannot write"):
        download_file("http://127.0.0.1:1/f.bin", blocker / "f.bin", PAYLOAD_MD5, progress=False)
    assert leftovers(tmp_path) == ["file"]
