"""Fetching public corpus archives: pinned sha256, resumable, retried, cached; safe extraction.

:func:`fetch` downloads ``url`` into a cache folder through :mod:`pooch` (caching, retries
with ``retry_if_failed``, the final hash check and the move into place). pooch 1.9 cannot
resume: its ``HTTPDownloader`` writes every attempt to a fresh temporary file that is
deleted on failure. :class:`ResumingDownloader` (a pooch downloader) therefore keeps the
bytes received so far in ``<name>.part`` and asks for the rest with an HTTP ``Range``
request guarded by ``If-Range`` (the ETag or Last-Modified of the first response, kept in
``<name>.part.json``), so a server whose file changed sends it whole again. A ``.part``
file is never trusted: only a complete file whose sha256 matches the pin is moved onto
``<name>``; a mismatch deletes the partial file and raises :class:`ChecksumError` naming the
URL and both hashes. One download of a given name runs at a time (a file lock).

:func:`extract` unpacks a tar or zip archive into a folder, atomically and once per
archive hash. Members with absolute paths, ``..`` components, links that point outside the
target, and (zip) links or (tar) device files are refused with :class:`UnsafeArchiveError`
naming the archive and the member; tar extraction also runs with ``filter='data'``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pooch
import requests
from filelock import FileLock

from speechlens.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
NET_CHUNK_BYTES = 1 << 16
"""Bytes per network read; a cut connection loses at most the chunk being read."""
TIMEOUT_S = 60
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
EXTRACTED_MARKER = ".speechlens-extracted"


class DownloadError(OSError):
    """A download or an archive that cannot be used; the message names the URL or file."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not hash to the pinned sha256 (not retried)."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the extraction folder (or is a device/link)."""


class IncompleteDownloadError(requests.exceptions.ConnectionError):
    """The server closed the connection before the whole file came (pooch retries these)."""


def check_sha256(value: str, where: str) -> str:
    """A sha256 pin as 64 lowercase hex digits (an optional ``sha256:`` prefix is dropped)."""
    digest = str(value).strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise DownloadError(f"{where}: sha256 {value!r} is not 64 hexadecimal digits")
    return digest


def file_name(url: str) -> str:
    """The cache file name of ``url``: the last part of its path (``dev-clean.tar.gz``)."""
    name = PurePosixPath(urlsplit(url).path).name
    if not name or name in (".", ".."):
        raise DownloadError(f"{url}: the URL does not end in a file name")
    return name


def sha256sum(path: str | os.PathLike) -> str:
    """The sha256 of a file as 64 lowercase hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    url: str,
    sha256: str,
    cache_dir: str | os.PathLike,
    *,
    retries: int = 3,
    timeout_s: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` into ``cache_dir`` unless a file with the pinned ``sha256`` is there.

    Returns the path of the verified file ``cache_dir / file_name(url)``. Network errors
    and connections cut mid-file are retried ``retries`` times (pooch ``retry_if_failed``,
    waiting 1 s, 2 s, ... between attempts), each attempt resuming where the last one
    stopped. Raises :class:`ChecksumError` (URL, expected and actual sha256; nothing left
    that a later run would trust) or :class:`DownloadError` when every attempt failed.
    """
    sha256 = check_sha256(sha256, url)
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = file_name(url)
    fetcher = pooch.create(
        path=cache_dir,
        base_url="",
        registry={name: f"sha256:{sha256}"},
        urls={name: url},
        retry_if_failed=retries,
    )
    downloader = ResumingDownloader(cache_dir / f"{name}.part", sha256, timeout_s)
    with FileLock(str(cache_dir / f"{name}.lock")):
        try:
            return Path(fetcher.fetch(name, downloader=downloader))
        except requests.exceptions.RequestException as err:
            partial = downloader.partial
            have = partial.stat().st_size if partial.exists() else 0
            raise DownloadError(
                f"{url}: download failed after {retries + 1} attempts ({err}); "
                f"{have} bytes kept in {partial} for the next run to resume"
            ) from err


class ResumingDownloader:
    """A pooch downloader that resumes into a ``.part`` file and checks the sha256.

    Called by pooch as ``downloader(url, output_file, pooch)``; on success the complete,
    verified bytes are moved from :attr:`partial` onto ``output_file`` (pooch's temporary
    file, which pooch then checks again and moves onto the cache name).
    """

    def __init__(self, partial: Path, sha256: str, timeout_s: float = TIMEOUT_S):
        self.partial = Path(partial)
        self.meta = self.partial.with_name(self.partial.name + ".json")
        self.sha256 = sha256
        self.timeout_s = timeout_s

    def __call__(self, url: str, output_file: str, pooch_=None) -> None:
        offset, validator = self._resume_point(url)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout_s) as resp:
            if resp.status_code == 416 and offset:
                total = _content_range_total(resp.headers.get("Content-Range", ""))
                if total != offset:  # not simply "already complete": start again
                    self._discard()
                    raise IncompleteDownloadError(f"{url}: range not satisfiable; restarting")
                log.info("%s: %d bytes already here", url, offset)
            else:
                resp.raise_for_status()
                total = self._open_and_write(url, resp, offset)
        self._finish(url, output_file, total)

    def _resume_point(self, url: str) -> tuple[int, str | None]:
        """Bytes already received for ``url`` and the validator to send with ``If-Range``."""
        if not self.partial.exists():
            return 0, None
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("url") != url:
            self._discard()
            return 0, None
        return self.partial.stat().st_size, meta.get("validator")

    def _open_and_write(self, url: str, resp: requests.Response, offset: int) -> int | None:
        """Append (206) or rewrite (200) :attr:`partial`; returns the full size if known."""
        if resp.status_code == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != offset:
                self._discard()
                raise IncompleteDownloadError(
                    f"{url}: server resumed at byte {start}, not {offset}; restarting"
                )
            mode = "ab"
            log.info("%s: resuming at byte %d of %s", url, offset, total)
        else:
            if offset:
                log.info("%s: server sent the whole file again (changed or no ranges)", url)
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
            validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            write_text(self.meta, json.dumps({"url": url, "validator": validator}))
        with open(self.partial, mode) as f:
            try:
                for chunk in resp.iter_content(NET_CHUNK_BYTES):
                    f.write(chunk)
            except requests.exceptions.RequestException as err:
                f.flush()
                raise IncompleteDownloadError(
                    f"{url}: connection lost after {f.tell()} bytes ({err})"
                ) from err
        return total

    def _finish(self, url: str, output_file: str, total: int | None) -> None:
        """Check size and sha256 of :attr:`partial`, then move it onto ``output_file``."""
        size = self.partial.stat().st_size
        if total is not None and size < total:
            raise IncompleteDownloadError(f"{url}: got {size} of {total} bytes")
        actual = sha256sum(self.partial)
        if actual != self.sha256:
            self._discard()
            raise ChecksumError(
                f"{url}: sha256 mismatch: expected {self.sha256}, got {actual} ({size} bytes); "
                "the download was deleted. Check the pinned `sha256` or the URL."
            )
        os.replace(self.partial, output_file)
        self.meta.unlink(missing_ok=True)

    def _discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def _content_range(value: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None when ``*``)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not match:
        raise IncompleteDownloadError(f"bad Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _content_range_total(value: str) -> int | None:
    """``bytes */TOTAL`` (the answer to an unsatisfiable range) -> TOTAL."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value)
    return int(match.group(1)) if match else None


# --- extraction ----------------------------------------------------------------------------

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


def fetch_and_extract(
    url: str, sha256: str, cache_dir: str | os.PathLike, *, retries: int = 3
) -> Path:
    """:func:`fetch` an archive into ``cache_dir`` and :func:`extract` it beside itself.

    ``.../dev-clean.tar.gz`` is unpacked into the folder ``.../dev-clean.tar.gz.extracted/``
    (named after the whole file name, so that ``x.zip`` and ``x.tar.gz`` cannot clash);
    returns that folder.
    """
    name = file_name(url)
    if not name.lower().endswith(ARCHIVE_SUFFIXES):  # fail before any download
        raise DownloadError(f"{url}: not an archive name (expected one of {ARCHIVE_SUFFIXES})")
    archive = fetch(url, sha256, cache_dir, retries=retries)
    return extract(archive, archive.with_name(f"{name}.extracted"), check_sha256(sha256, url))


def extract(archive: str | os.PathLike, dest: str | os.PathLike, sha256: str) -> Path:
    """Unpack a ``.tar[.gz|.bz2|.xz]`` or ``.zip`` archive into the folder ``dest``.

    Every member is checked first (:func:`check_member`); nothing is written if one is
    refused. The folder is built under a temporary name and renamed when complete, with a
    marker holding ``sha256`` (the archive's): a later call with the same hash returns at
    once, another hash re-extracts. Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / EXTRACTED_MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == sha256:
        return dest
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if marker.is_file() and marker.read_text(encoding="utf-8").strip() == sha256:
            return dest
        with atomic_path(dest, is_dir=True) as tmp:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, tmp)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, tmp)
            else:
                raise DownloadError(f"{archive}: not a tar or zip archive")
            (tmp / EXTRACTED_MARKER).write_text(sha256 + "\n", encoding="utf-8")
    log.info("extracted %s into %s", archive, dest)
    return dest


def check_member(archive: Path, name: str) -> PurePosixPath:
    """An archive member name as a safe relative path; raises :class:`UnsafeArchiveError`."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'; refused")
    return path


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    """Refuse a link whose target is absolute or resolves outside the extraction folder."""
    member = check_member(archive, name)
    base = PurePosixPath() if hard else member.parent
    if PurePosixPath(target).is_absolute() or not _stays_inside(base / target):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} links to {target!r}, outside the extraction folder; "
            "refused"
        )


def _stays_inside(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            check_member(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, member.name, member.linkname, member.islnk())
            elif member.isdev():
                raise UnsafeArchiveError(
                    f"{archive}: member {member.name!r} is a device file; refused"
                )
        try:
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as err:
            raise UnsafeArchiveError(f"{archive}: refused by the tar 'data' filter: {err}") from err


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            check_member(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(
                    f"{archive}: member {info.filename!r} is a symbolic link; refused "
                    "(zip links are not extracted)"
                )
        zf.extractall(dest, members=infos)
