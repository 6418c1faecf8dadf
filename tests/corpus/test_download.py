"""Wikipedia dump download: resume, checksum, mirror; served by a local HTTP server, no network.

Run: .venv/bin/python -m pytest tests/corpus/test_download.py -q
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from conftest import run_tool

from bertlab.corpus.download import download_dump, dump_url
from bertlab.corpus.prepare import prepare_corpus
from bertlab.files.output_folder import read_marker

DATE = "20160501"
NAME = f"enwiki-{DATE}-pages-articles.xml.bz2"


class DumpHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under server.root; honours `Range: bytes=N-` unless the path starts /norange."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server = self.server
        ranged = not self.path.startswith("/norange/")
        relative = self.path.removeprefix("/norange/").lstrip("/")
        path = server.root / relative
        requested = self.headers.get("Range")
        server.requests.append((relative, requested))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(requested[len("bytes=") : -1]) if requested and ranged else 0
        if start >= len(data) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        # Counted before the write: once the client holds every byte the test may reset the
        # counter, and a count made after the write would land in the next test's figure.
        server.sent += len(data) - start
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(shared_data: Path, tmp_path_factory):
    """A local dumps site: /enwiki/20160501/ holds the shared dump and its sha1sums.txt."""
    root = tmp_path_factory.mktemp("mirror")
    dump = shared_data / "enwiki-sample.xml.bz2"
    for date, digest in (
        (DATE, hashlib.sha1(dump.read_bytes()).hexdigest()),
        ("20000101", "0" * 40),
    ):
        folder = root / "enwiki" / date
        folder.mkdir(parents=True)
        (folder / f"enwiki-{date}-pages-articles.xml.bz2").symlink_to(dump)
        (folder / f"enwiki-{date}-sha1sums.txt").write_text(
            f"{'1' * 40}  enwiki-{date}-pages-logging.xml.gz\n"
            f"{digest}  enwiki-{date}-pages-articles.xml.bz2\n"
        )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DumpHandler)
    server.root, server.requests, server.sent = root, [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _reset(server) -> None:
    server.requests.clear()
    server.sent = 0


def test_fresh_download(mirror, shared_data: Path, tmp_path: Path) -> None:
    _reset(mirror)
    path = download_dump("en", DATE, tmp_path, mirror=mirror.url)
    assert path == tmp_path / NAME
    assert path.read_bytes() == (shared_data / "enwiki-sample.xml.bz2").read_bytes()
    assert not (tmp_path / f"{NAME}.part").exists()
    # A verified file under the final name is reused without a request.
    requests = len(mirror.requests)
    assert download_dump("en", int(DATE), tmp_path, mirror=mirror.url) == path
    assert len(mirror.requests) == requests


def test_resume_sends_only_the_rest(mirror, shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "enwiki-sample.xml.bz2").read_bytes()
    cut = min(400_000, len(data) // 2)
    (tmp_path / f"{NAME}.part").write_bytes(data[:cut])
    _reset(mirror)
    path = download_dump("en", DATE, tmp_path, mirror=mirror.url)
    assert path.read_bytes() == data
    assert (f"enwiki/{DATE}/{NAME}", f"bytes={cut}-") in mirror.requests
    assert mirror.sent < len(data) - cut + 10_000  # the dump's rest plus the sums file


def test_server_without_range_support_restarts(mirror, shared_data, tmp_path: Path) -> None:
    data = (shared_data / "enwiki-sample.xml.bz2").read_bytes()
    (tmp_path / f"{NAME}.part").write_bytes(b"garbage that is not the start of the dump")
    path = download_dump("en", DATE, tmp_path, mirror=f"{mirror.url}/norange")
    assert path.read_bytes() == data


def test_complete_part_file_is_verified_and_kept(mirror, shared_data, tmp_path: Path) -> None:
    data = (shared_data / "enwiki-sample.xml.bz2").read_bytes()
    (tmp_path / f"{NAME}.part").write_bytes(data)
    _reset(mirror)
    assert download_dump("en", DATE, tmp_path, mirror=mirror.url).read_bytes() == data
    assert mirror.sent < 10_000  # nothing left to send: 416, then the checksum matched


def test_mirror_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("BERTLAB_WIKIMEDIA_MIRROR", "http://mirror.example/dumps/")
    assert dump_url("ja", "20240601") == (
        "http://mirror.example/dumps/jawiki/20240601/jawiki-20240601-pages-articles.xml.bz2"
    )
    monkeypatch.delenv("BERTLAB_WIKIMEDIA_MIRROR")
    assert dump_url("zh-yue", "20240601").startswith("https://dumps.wikimedia.org/zh_yuewiki/")
    with pytest.raises(ValueError, match="--date '2024-06' must be a dump date YYYYMMDD"):
        dump_url("en", "2024-06")


def test_download_through_the_tool(mirror, en_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    run_tool(
        "prepare_corpus.py", "--download", "en", "--date", DATE, "--mirror", mirror.url,
        "--output_dir", out, "--valid_docs", "10", "--test_docs", "5",
    )  # fmt: skip
    assert (out / "raw" / NAME).is_file()
    for split in ("train", "valid", "test"):  # the same corpus as from the local file
        assert (out / f"{split}.txt").read_bytes() == (en_corpus / f"{split}.txt").read_bytes()
    # The dump in raw/ is prepare_corpus's own: a rerun needs --overwrite, keeps it and reuses it.
    assert read_marker(out)["entries"] == ["raw", "test.txt", "train.txt", "valid.txt"]
    args = {"download": "en", "date": DATE, "mirror": mirror.url, "output_dir": str(out)}
    with pytest.raises(ValueError, match="holds an earlier output of prepare_corpus"):
        prepare_corpus(**args, valid_docs=10, test_docs=5)
    _reset(mirror)
    prepare_corpus(**args, valid_docs=10, test_docs=5, overwrite=True)
    assert (out / "raw" / NAME).is_file() and not mirror.requests
    assert (out / "train.txt").read_bytes() == (en_corpus / "train.txt").read_bytes()


def test_bad_checksum_is_a_clear_error(mirror, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    result = run_tool(
        "prepare_corpus.py", "--download", "en", "--date", "20000101", "--mirror", mirror.url,
        "--output_dir", out, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "enwiki-20000101-pages-articles.xml.bz2.part" in line
    assert "sha1 checksum" in line and "does not match " + "0" * 40 in line
    assert not list((out / "raw").iterdir())  # the corrupt download is not kept
    assert not (out / "train.txt").exists()


def test_missing_dump_is_a_clear_error(mirror, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"cannot verify the download .*HTTP 404.*dates are listed"
    ):
        download_dump("en", "19990101", tmp_path, mirror=mirror.url)
    assert not list(tmp_path.iterdir()) or not any(tmp_path.rglob("*.bz2*"))
