"""Downloads through a real HTTP server on 127.0.0.1: cache, resume, retry, checksum, and
safe archive extraction (absolute paths, ``..``, escaping links refused)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from speechlens.corpora import download
from speechlens.corpora.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    extract,
    fetch,
    fetch_and_extract,
    sha256sum,
)
from tests.httpserver import FileServer

SIZE = 300_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path):
    """A server over tmp_path/srv holding ``blob.bin`` (300 kB of random bytes)."""
    root = tmp_path / "srv"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / "blob.bin").write_bytes(data)
    with FileServer(root) as server:
        yield server, data


def test_fetch_downloads_verifies_and_caches(served, tmp_path):
    server, data = served
    cache = tmp_path / "cache"
    path = fetch(f"{server.url}/blob.bin", sha(data), cache, retries=0)
    assert path == (cache / "blob.bin").resolve()
    assert path.read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == ["blob.bin", "blob.bin.lock"]
    assert server.requests == [("/blob.bin", None)]
    # a second fetch finds the verified file and asks nothing
    assert fetch(f"{server.url}/blob.bin", sha(data), cache, retries=0) == path
    assert len(server.requests) == 1


def test_connection_cut_mid_file_is_resumed_with_a_range_request(served, tmp_path):
    server, data = served
    server.cut(100_000)
    path = fetch(f"{server.url}/blob.bin", sha(data), tmp_path / "cache", retries=1)
    assert sha256sum(path) == sha(data)
    assert len(server.requests) == 2
    first, second = server.requests
    assert first == ("/blob.bin", None)
    offset = int(second[1].removeprefix("bytes=").rstrip("-"))
    # resumed from what the first response delivered (all but the chunk being read)
    assert 100_000 - download.NET_CHUNK_BYTES <= offset <= 100_000
    assert not list((tmp_path / "cache").glob("*.part*"))


def test_a_failed_run_keeps_its_partial_file_and_the_next_run_resumes(served, tmp_path):
    server, data = served
    cache = tmp_path / "cache"
    url = f"{server.url}/blob.bin"
    server.cut(150_000)
    with pytest.raises(DownloadError, match="download failed after 1 attempts") as err:
        fetch(url, sha(data), cache, retries=0)
    assert url in str(err.value) and "kept" in str(err.value)
    assert not (cache / "blob.bin").exists()  # nothing a later run would trust
    partial = cache / "blob.bin.part"
    kept = partial.stat().st_size
    assert 0 < kept <= 150_000
    assert partial.read_bytes() == data[:kept]

    path = fetch(url, sha(data), cache, retries=0)
    assert path.read_bytes() == data
    assert server.requests[-1] == ("/blob.bin", f"bytes={kept}-")
    assert not partial.exists()


def test_a_partial_file_of_a_changed_server_file_is_not_spliced(served, tmp_path):
    server, data = served
    cache = tmp_path / "cache"
    server.cut(150_000)
    with pytest.raises(DownloadError):
        fetch(f"{server.url}/blob.bin", sha(data), cache, retries=0)
    new = os.urandom(SIZE)
    (server.root / "blob.bin").write_bytes(new)
    # If-Range carries the old ETag: the server sends the new file whole (200)
    path = fetch(f"{server.url}/blob.bin", sha(new), cache, retries=0)
    assert path.read_bytes() == new


def test_a_server_without_ranges_sends_the_whole_file_again(served, tmp_path):
    server, data = served
    server.ranges = False
    server.cut(100_000)
    path = fetch(f"{server.url}/blob.bin", sha(data), tmp_path / "cache", retries=1)
    assert path.read_bytes() == data


def test_checksum_mismatch_names_url_and_both_hashes_and_leaves_nothing(served, tmp_path):
    server, data = served
    cache = tmp_path / "cache"
    url = f"{server.url}/blob.bin"
    wrong = "ab" * 32
    with pytest.raises(ChecksumError) as err:
        fetch(url, wrong, cache, retries=2)
    message = str(err.value)
    assert url in message and wrong in message and sha(data) in message
    assert len(server.requests) == 1  # a wrong pin is not retried
    assert [p.name for p in cache.iterdir()] == ["blob.bin.lock"]
    # the right pin then downloads from byte 0 (no stale partial to resume)
    assert fetch(url, sha(data), cache, retries=0).read_bytes() == data
    assert server.requests[-1] == ("/blob.bin", None)


def test_a_corrupted_cached_file_is_downloaded_again(served, tmp_path):
    server, data = served
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin").write_bytes(b"not the file")
    assert fetch(f"{server.url}/blob.bin", sha(data), cache, retries=0).read_bytes() == data
    assert len(server.requests) == 1


def test_missing_file_and_bad_pin_are_clear_errors(served, tmp_path):
    server, data = served
    with pytest.raises(DownloadError, match=r"/nope\.bin: download failed.*404"):
        fetch(f"{server.url}/nope.bin", sha(data), tmp_path / "cache", retries=0)
    with pytest.raises(DownloadError, match="sha256 'abc' is not 64 hexadecimal digits"):
        fetch(f"{server.url}/blob.bin", "abc", tmp_path / "cache")
    with pytest.raises(DownloadError, match="does not end in a file name"):
        fetch(f"{server.url}/", sha(data), tmp_path / "cache")


# --- extraction ----------------------------------------------------------------------------


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_extract_unpacks_once_per_archive_hash(tmp_path):
    archive = make_tar(
        tmp_path / "ok.tar.gz",
        [("top/a.txt", b"alpha"), ("top/sub/b.txt", b"beta"), link("top/sub/to_a", "../a.txt")],
    )
    dest = extract(archive, tmp_path / "ok", sha256sum(archive))
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (dest / "top" / "sub" / "to_a").read_bytes() == b"alpha"  # a link inside is fine
    (dest / "top" / "a.txt").write_bytes(b"edited")
    extract(archive, dest, sha256sum(archive))  # same hash: left as it is
    assert (dest / "top" / "a.txt").read_bytes() == b"edited"
    extract(archive, dest, "0" * 64)  # another hash: extracted again
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (("/etc/evil.txt", b"x"), "absolute path"),
        (("top/../../evil.txt", b"x"), "contains '..'"),
        (link("top/escape", "../../outside"), "outside the extraction folder"),
        (link("top/abs", "/etc/passwd"), "outside the extraction folder"),
        (link("top/hard", "../outside", tarfile.LNKTYPE), "outside the extraction folder"),
    ],
)
def test_hostile_tar_members_are_refused(tmp_path, member, reason):
    archive = make_tar(tmp_path / "bad.tar.gz", [("top/fine.txt", b"ok"), member])
    name = member[0] if isinstance(member, tuple) else member.name
    with pytest.raises(UnsafeArchiveError, match=reason) as err:
        extract(archive, tmp_path / "out", sha256sum(archive))
    assert str(archive) in str(err.value) and repr(name) in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_tar_device_files_are_refused(tmp_path):
    dev = tarfile.TarInfo("top/null")
    dev.type = tarfile.CHRTYPE
    archive = make_tar(tmp_path / "dev.tar", [dev])
    with pytest.raises(UnsafeArchiveError, match="'top/null' is a device file"):
        extract(archive, tmp_path / "out", sha256sum(archive))


def make_zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def test_zip_extracts_and_refuses_hostile_members(tmp_path):
    good = make_zip(tmp_path / "good.zip", [("top/a.txt", b"alpha", None)])
    assert (extract(good, tmp_path / "good", "1" * 64) / "top" / "a.txt").read_bytes() == b"alpha"
    cases = [
        ("/abs.txt", b"x", None, "absolute path"),
        ("C:/win.txt", b"x", None, "absolute path"),
        ("a/../../up.txt", b"x", None, "contains '..'"),
        ("a/link", b"../../etc/passwd", stat.S_IFLNK | 0o777, "is a symbolic link"),
    ]
    for i, (name, data, mode, reason) in enumerate(cases):
        archive = make_zip(tmp_path / f"bad{i}.zip", [("ok.txt", b"ok", None), (name, data, mode)])
        with pytest.raises(UnsafeArchiveError, match=reason) as err:
            extract(archive, tmp_path / f"out{i}", "1" * 64)
        assert repr(name) in str(err.value)
        assert not (tmp_path / f"out{i}").exists()


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"plain bytes")
    with pytest.raises(DownloadError, match="not a tar or zip archive"):
        extract(path, tmp_path / "x", "1" * 64)


def test_fetch_and_extract_over_http(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    archive = make_tar(srv / "data-v1.tar.gz", [("data/x.txt", b"x")])
    with FileServer(srv) as server:
        dest = fetch_and_extract(
            f"{server.url}/data-v1.tar.gz", sha256sum(archive), tmp_path / "dl"
        )
        assert dest == (tmp_path / "dl" / "data-v1.tar.gz.extracted").resolve()
        assert (dest / "data" / "x.txt").read_bytes() == b"x"
        with pytest.raises(DownloadError, match="not an archive name"):
            fetch_and_extract(f"{server.url}/x.bin", "1" * 64, tmp_path / "dl")
    assert len(server.requests) == 1  # the bad name failed before any request


def test_a_complete_partial_file_is_verified_without_downloading_again(served, tmp_path):
    """A run killed after the last byte but before the rename: the server answers the range
    past the end with 416 and the kept bytes are checked and used."""
    server, data = served
    cache = tmp_path / "cache"
    cache.mkdir()
    url = f"{server.url}/blob.bin"
    (cache / "blob.bin.part").write_bytes(data)
    (cache / "blob.bin.part.json").write_text(json.dumps({"url": url, "validator": None}))
    assert fetch(url, sha(data), cache, retries=0).read_bytes() == data
    assert server.requests == [("/blob.bin", f"bytes={SIZE}-")]
    assert sorted(p.name for p in cache.iterdir()) == ["blob.bin", "blob.bin.lock"]
