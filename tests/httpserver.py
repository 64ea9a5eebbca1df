"""A real HTTP file server on 127.0.0.1 for offline download tests.

Serves the files of a folder with ``Content-Length``, ``ETag``, ``Last-Modified`` and
single byte ranges (``Range: bytes=N-`` or ``N-M``, answered ``206``; ``If-Range`` with a
stale validator gets the whole file, ``200``). Switches:

- ``cut_after``: the next ``cuts`` responses send only this many body bytes, then the
  connection is closed (the headers announce the full length, as a real cut would);
- ``ranges``: False makes the server ignore ``Range`` (always ``200``).

Every request is recorded in :attr:`FileServer.requests` as ``(path, Range header or
None)``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    """Serve ``root`` on ``127.0.0.1`` (a free port) in a background thread."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None
        self.cuts = 0
        self.ranges = True
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def cut(self, after_bytes: int, times: int = 1) -> None:
        """Cut the next ``times`` responses after ``after_bytes`` body bytes."""
        self.cut_after, self.cuts = after_bytes, times

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _take_cut(self) -> int | None:
        with self._lock:
            if self.cuts > 0 and self.cut_after is not None:
                self.cuts -= 1
                return self.cut_after
            return None


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            rng = self.headers.get("Range")
            server.requests.append((self.path, rng))
            path = server.root / self.path.lstrip("/").split("?")[0]
            if not path.is_file() or not path.resolve().is_relative_to(server.root.resolve()):
                self._send_status(404)
                return
            data = path.read_bytes()
            etag = '"' + hashlib.sha1(data).hexdigest() + '"'
            last_modified = formatdate(path.stat().st_mtime, usegmt=True)
            start, end, status = 0, len(data) - 1, 200
            if_range = self.headers.get("If-Range")
            fresh = if_range is None or if_range in (etag, last_modified)
            if rng and server.ranges and fresh:
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if not match or int(match.group(1)) >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(match.group(1))
                end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
                status = 206
            body = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            cut = server._take_cut()
            if cut is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            if cut is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True

        def _send_status(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
