"""serve-logs: the log tree over plain HTTP, read-only (APF's LogServer).

GET and HEAD only (405 for anything else); a `robots.txt` that denies every crawler; plain text for
logs (`.out`, `.err`, `.log`, ...), directory listings, and nothing outside the tree: every path is
percent-decoded once, `..` and hidden names are refused, and the real path (symlinks resolved) must stay
inside the tree. Standard library only.
"""

from __future__ import annotations

import html
import logging
import mimetypes
import os
import posixpath
import shutil
import socket
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from harvester_cli import __version__
from harvester_cli.site.logs import COMMANDS

log = logging.getLogger(__name__)

ROBOTS = b"User-agent: *\nDisallow: /\n"
ALLOWED = ("GET", "HEAD")
TEXT_SUFFIXES = (".out", ".err", ".log", ".txt", ".json", ".sub", ".jdl", ".xrsl", ".adl", ".sh", ".sbatch")
# Directories of the log tree that are not for the public: each command's own log.
PRIVATE_TOP = (COMMANDS,)


def content_type(name: str) -> str:
    lower = name.lower()
    if lower.endswith(TEXT_SUFFIXES) or any(f"{s}." in lower for s in (".log", ".out", ".err")):
        return "text/plain; charset=utf-8"
    guessed, encoding = mimetypes.guess_type(name)
    if encoding == "gzip":
        return "application/gzip"
    if guessed and guessed.startswith("text/"):
        return "text/plain; charset=utf-8"   # never text/html: a pilot's output is not a page to render
    return guessed or "application/octet-stream"


class LogRequestHandler(BaseHTTPRequestHandler):
    server_version = f"harvester-cli-logs/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # set by LogServer
    root: str = "/"
    prefix: str = "/"

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command not in ALLOWED:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed: this server is read-only")
            return False
        return True

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # -- responses ---------------------------------------------------------------------------

    def _headers(self, status: int, ctype: str, length: int, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Robots-Tag", "noindex, nofollow")
        self.send_header("Cache-Control", "no-cache")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _error(self, status: HTTPStatus, text: str | None = None) -> None:
        body = f"{status.value} {status.phrase}\n{text or ''}\n".encode()
        extra = {"Allow": ", ".join(ALLOWED)} if status == HTTPStatus.METHOD_NOT_ALLOWED else {}
        extra["Connection"] = "close"
        self.close_connection = True
        self._headers(status, "text/plain; charset=utf-8", len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _bytes(self, body: bytes, ctype: str) -> None:
        self._headers(HTTPStatus.OK, ctype, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- GET / HEAD --------------------------------------------------------------------------

    def do_GET(self) -> None:
        url_path = urlsplit(self.path).path
        if url_path == "/robots.txt":
            self._bytes(ROBOTS, "text/plain; charset=utf-8")
            return
        target = self._resolve(url_path)
        if target is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        if os.path.isdir(target):
            if not url_path.endswith("/"):
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", quote(url_path) + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._listing(target, url_path)
        else:
            self._file(target)

    do_HEAD = do_GET

    def _resolve(self, url_path: str) -> str | None:
        """The file or directory a URL path names inside the tree, or None."""
        if not (url_path == self.prefix.rstrip("/") or url_path.startswith(self.prefix)):
            return None
        try:
            relative = unquote(url_path[len(self.prefix):], errors="strict") if url_path.startswith(self.prefix) else ""
        except UnicodeDecodeError:
            return None
        if "\x00" in relative or "\\" in relative:
            return None
        parts = [p for p in relative.split("/") if p]
        if any(p in (".", "..") or p.startswith(".") for p in parts):
            return None
        if parts and parts[0] in PRIVATE_TOP:
            return None
        candidate = os.path.join(self.root, *parts)
        real = os.path.realpath(candidate)
        if real != self.root and not real.startswith(self.root + os.sep):
            return None   # a symlink out of the tree
        if not os.path.exists(real):
            return None
        return real

    def _listing(self, directory: str, url_path: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        title = html.escape(unquote(url_path))
        rows = [] if url_path == self.prefix else ['<a href="../">../</a>']
        for entry in entries:
            if entry.name.startswith(".") or (directory == self.root and entry.name in PRIVATE_TOP):
                continue
            try:
                is_dir = entry.is_dir()
                st = entry.stat()
            except OSError:
                continue   # a broken symlink
            name = entry.name + ("/" if is_dir else "")
            size = "-" if is_dir else str(st.st_size)
            stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime))
            rows.append(f'<a href="{quote(name)}">{html.escape(name)}</a>{" " * max(1, 50 - len(name))}'
                        f'{stamp}  {size:>12}')
        body = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex, "
                f"nofollow\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1><pre>\n"
                + "\n".join(rows) + "\n</pre></body></html>\n").encode("utf-8", "replace")
        self._bytes(body, "text/html; charset=utf-8")

    def _file(self, path: str) -> None:
        try:
            f = open(path, "rb")
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with f:
            st = os.fstat(f.fileno())
            self._headers(HTTPStatus.OK, content_type(os.path.basename(path)), st.st_size,
                          {"Last-Modified": formatdate(st.st_mtime, usegmt=True)})
            if self.command != "HEAD":
                shutil.copyfileobj(f, self.wfile, st.st_size if st.st_size < 1 << 20 else 1 << 20)


class LogServer:
    """The log tree at http://host:port<prefix>. `start()` serves in a thread (tests); `serve_forever()` in
    the foreground (the command)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8080, prefix: str = "/"):
        root_real = os.path.realpath(root)
        prefix = "/" + posixpath.normpath("/" + prefix).strip("/")
        prefix = prefix if prefix == "/" else prefix + "/"
        handler = type("BoundLogRequestHandler", (LogRequestHandler,), {"root": root_real, "prefix": prefix})
        server_class = ThreadingHTTPServer
        if ":" in host:   # an IPv6 address, e.g. :: for every interface
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.httpd = server_class((host, port), handler)
        self.httpd.daemon_threads = True
        self.root = Path(root_real)
        self.prefix = prefix
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}{self.prefix}"

    def start(self) -> LogServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="serve-logs", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> LogServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def prefix_from(log_url: str | None) -> str:
    """The path part of log_url ('http://host:8080/logs' -> '/logs/'): worker log URLs point below it."""
    if not log_url:
        return "/"
    path = urlsplit(log_url).path or "/"
    return path if path.endswith("/") else path + "/"


def port_from(log_url: str | None, default: int = 8080) -> int:
    if not log_url:
        return default
    try:
        return urlsplit(log_url).port or default
    except ValueError:
        return default
