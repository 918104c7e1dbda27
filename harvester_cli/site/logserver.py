"""serve-logs: the log tree over plain HTTP, read-only (APF's LogServer), with the status page and the
Prometheus metrics beside it.

What is served: GET and HEAD only (405 for anything else); a `robots.txt` that denies every crawler;
plain text for logs (`.out`, `.err`, `.log`, ...), directory listings, `/status` (one HTML page) and
`/metrics` (the exposition format) when the command hands them over; `/` redirects to `/status` when the
tree is served under a prefix (at `/`, its listing links the pages). Nothing outside the tree: every
path is percent-decoded once and `..` is refused, then the rules hold for the RESOLVED path (symlinks
followed): it must lie inside the tree, not under `commands/` (each command's private log), and no part
of it may be a hidden name. A link under `workers/` to `../commands/` or `.state/` is a 404 like the
target itself.

How it stays up under slow or idle clients (slowloris): one thread owns every connection and reads
request heads without blocking (a selector); a connection holds a worker thread only while its answer is
written. A request head must be complete within `header_timeout` seconds of its first byte (of the
connection, for a new one): later bytes do not extend it, the client gets 408 and is closed. An idle
keep-alive connection is closed after `idle_timeout`, and a worker gives up on a client that does not
read for that long. At most `max_connections` connections are open: a new one beyond that closes the
connection that has waited longest for its request head (then the longest idle one), so a flood of
half-open connections costs sockets, not threads, and a normal client still gets in. Standard library
only.
"""

from __future__ import annotations

import errno
import html
import io
import logging
import mimetypes
import os
import posixpath
import re
import selectors
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from queue import Empty, SimpleQueue
from urllib.parse import quote, unquote, urlsplit

from harvester_cli import __version__
from harvester_cli.site.logs import COMMANDS, WORKERS

log = logging.getLogger(__name__)

ROBOTS = b"User-agent: *\nDisallow: /\n"
ALLOWED = ("GET", "HEAD")
TEXT_SUFFIXES = (".out", ".err", ".log", ".txt", ".json", ".sub", ".jdl", ".xrsl", ".adl", ".sh", ".sbatch")
# Directories of the log tree that are not for the public: each command's own log.
PRIVATE_TOP = (COMMANDS,)
MAX_HEAD = 64 * 1024          # a request head larger than this is refused (431)
# The status page draws only inline SVG and CSS: the browser may load nothing else.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


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


# A worker's files share one stem (pilot.out, .err, .log, .jdl: PanDA's monitor finds the others from the
# stdout URL). Workers made before had batch.log (arc-errors.log on ARC) and submit.sub (submit.sbatch on
# Slurm): a URL of either naming finds the file of the other in the same directory.
OLD_NAMES = {".log": ("batch.log", "arc-errors.log"), ".jdl": ("submit.sub", "submit.sbatch")}


def aliases(name: str) -> tuple[str, ...]:
    """Other names the same file of a worker's log directory has had: a new URL of an old worker's
    directory, or an old URL of a new one."""
    for suffix, old in OLD_NAMES.items():
        if name in old:
            return (f"pilot{suffix}", f"pilot-0{suffix}")
        if name.endswith(suffix) and re.fullmatch(r"pilot(-\d+)?", name[:-len(suffix)]):
            return old
    return ()


def public_parts(root: str, real: str) -> list[str] | None:
    """The parts of a resolved path below `root`, or None if it is outside the tree, private or hidden."""
    if real == root:
        return []
    if not real.startswith(root + os.sep):
        return None
    parts = real[len(root) + 1:].split(os.sep)
    if any(p.startswith(".") for p in parts) or parts[0] in PRIVATE_TOP:
        return None
    return parts


class LogRequestHandler(BaseHTTPRequestHandler):
    """Answers exactly one request whose head the server has already read (rfile holds it)."""

    server_version = f"harvester-cli-logs/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # A request line without a version is an error to answer with a status line, not an HTTP/0.9 request
    # (whose answer is a bare body a client cannot tell from a file).
    default_request_version = "HTTP/1.0"

    # set by LogServer
    root: str = "/"
    prefix: str = "/"
    pages: dict[str, tuple[str, Callable[[], bytes]]] = {}
    deadline_seconds: float = 300.0

    def __init__(self, sock: socket.socket, address, server: LogServer, head: bytes):
        self._head = head
        super().__init__(sock, address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = _Writer(self.request, time.monotonic() + self.deadline_seconds)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (headers.get("Content-Length", "0") not in ("", "0")
                                    or headers.get("Transfer-Encoding")):
            self.close_connection = True   # a body we did not read: the next bytes are not a request head

    def finish(self) -> None:
        pass

    def send_error(self, code, message=None, explain=None) -> None:
        # http.server's own refusals of a bad request line: with a status line even when that line said HTTP/0.9
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"   # so that the refusal has a status line
            self._error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/0.9 is not served: use HTTP/1.0 or 1.1")
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

    def _redirect(self, location: str, status: HTTPStatus = HTTPStatus.FOUND) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _bytes(self, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self._headers(HTTPStatus.OK, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- GET / HEAD --------------------------------------------------------------------------

    def do_GET(self) -> None:
        url_path = urlsplit(self.path).path
        if url_path == "/robots.txt":
            self._bytes(ROBOTS, "text/plain; charset=utf-8")
            return
        if url_path == "/" and self.prefix != "/" and "/status" in self.pages:
            self._redirect("/status")   # a browser pointed at the server finds what the workers do
            return
        if url_path in self.pages:
            ctype, make = self.pages[url_path]
            try:
                body = make()
            except Exception as exc:   # the state database is locked or gone: say so, keep serving logs
                log.warning("%s: %s: %s", url_path, type(exc).__name__, exc)
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{url_path} is not available now: {type(exc).__name__}")
                return
            extra = {"Content-Security-Policy": PAGE_POLICY} if ctype.startswith("text/html") else {}
            self._bytes(body, ctype, extra)
            return
        target = self._resolve(url_path)
        if target is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        if os.path.isdir(target):
            if not url_path.endswith("/"):
                # the path as the client sent it, escapes kept (quoting it again made a%20b a%2520b)
                self._redirect(quote(url_path, safe="/%") + "/", HTTPStatus.MOVED_PERMANENTLY)
                return
            self._listing(target, url_path)
        else:
            self._file(target)

    do_HEAD = do_GET

    def _resolve(self, url_path: str) -> str | None:
        """The file or directory a URL path names inside the tree, or None. The rules are checked on the
        requested parts (a clear refusal of `..`) and again on the resolved path (symlinks followed)."""
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
        real = os.path.realpath(os.path.join(self.root, *parts))
        if not os.path.exists(real) and parts and parts[0] == WORKERS:
            real = next((r for r in (os.path.realpath(os.path.join(self.root, *parts[:-1], name))
                                     for name in aliases(parts[-1])) if os.path.exists(r)), real)
        if public_parts(self.root, real) is None or not os.path.exists(real):
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
        if url_path == "/":   # the tree at the root of the server: the pages beside it too
            rows += [f'<a href="{quote(page)}">{html.escape(page)}</a>' for page in sorted(self.pages)]
        for entry in entries:
            if entry.name.startswith(".") or public_parts(self.root, os.path.realpath(entry.path)) is None:
                continue   # hidden, private, or a link to such a place or out of the tree
            try:
                is_dir = entry.is_dir()
                st = entry.stat()
            except OSError:
                continue   # a broken symlink
            name = entry.name + ("/" if is_dir else "")
            size = "-" if is_dir else str(st.st_size)
            stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime))
            # a name that is not UTF-8 is linked by its bytes (quote() of it alone raised, and the whole
            # listing was an empty reply)
            rows.append(f'<a href="{quote(name, errors="surrogateescape")}">{html.escape(name)}</a>'
                        f'{" " * max(1, 50 - len(name))}{stamp}  {size:>12}')
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
                shutil.copyfileobj(f, self.wfile, 256 * 1024)


class _Writer(io.RawIOBase):
    """The socket as a file for the handler: each write may block only for the socket's timeout, and the
    whole answer only until `deadline` (a client that reads a byte a minute does not keep a worker)."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if time.monotonic() > self._deadline:
            raise TimeoutError("answer took too long: the client does not read")
        self._sock.sendall(data)
        return len(data)


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    address: tuple
    opened: float
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    idle: bool = False           # between requests of a keep-alive connection (no byte of the next yet)


class LogServer:
    """The log tree at http://host:port<prefix>. `start()` serves in a thread (tests); `serve_forever()` in
    the foreground (the command). `pages` maps extra paths (/status, /metrics) to (content type, maker)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8080, prefix: str = "/", *,
                 pages: dict[str, tuple[str, Callable[[], bytes]]] | None = None, max_connections: int = 512,
                 threads: int = 8, header_timeout: float = 10.0, idle_timeout: float = 30.0):
        root_real = os.path.realpath(root)
        prefix = "/" + posixpath.normpath("/" + prefix).strip("/")
        prefix = prefix if prefix == "/" else prefix + "/"
        self.handler = type("BoundLogRequestHandler", (LogRequestHandler,), {
            "root": root_real, "prefix": prefix, "pages": dict(pages or {}),
            "deadline_seconds": max(60.0, 10 * idle_timeout)})
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=1024)
        self.sock.setblocking(False)
        self.root = Path(root_real)
        self.prefix = prefix
        self.max_connections = max_connections
        self.threads = threads
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        # accepted, requests (complete heads handed to a worker), evicted (closed for a newer one at the cap,
        # 503), refused, header_timeout (408), idle_closed, too_large (431), write_failed
        self.stats: Counter[str] = Counter()
        self._open: set[_Connection] = set()        # owned by the loop (in the selector)
        self._busy = 0                               # connections a worker is answering
        self._lock = threading.Lock()
        self._returned: SimpleQueue[_Connection] = SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        # every thread of this server is named after it (tests and py-spy count them)
        self.name = f"serve-logs-{self.address[1]}"
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=self.name)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}{self.prefix}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open) + self._busy

    # -- the loop ------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        try:
            self._loop()
        except (OSError, ValueError):
            if not self._stop.is_set():
                raise
            # closed under the loop (close() without stop(), or before the loop began): the end, not a fault
        finally:
            self._stopped.set()

    def _loop(self) -> None:
        self._selector.register(self.sock, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                soonest = min((c.deadline for c in self._open), default=now + 1.0)
            for key, _ in self._selector.select(max(0.0, min(1.0, soonest - now))):
                try:
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._take_back()
                    else:
                        self._read(key.data)
                except Exception:   # one connection's trouble must not stop the server for everyone
                    log.exception("serve-logs: event of %s failed", key.data if isinstance(key.data, str)
                                  else key.data.address[0])
                    if isinstance(key.data, _Connection):
                        self._drop(key.data)
            self._expire(time.monotonic())

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # out of file descriptors: shed the oldest waiter, try again next round
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._evict()
                return
            with self._lock:
                full = len(self._open) + self._busy >= self.max_connections
            if full and not self._evict():
                sock.close()   # every slot is a request being answered: no one to shed
                self.stats["refused"] += 1
                continue
            sock.setblocking(False)
            now = time.monotonic()
            conn = _Connection(sock, address, now, now + self.header_timeout)
            self._add(conn)
            self.stats["accepted"] += 1

    def _add(self, conn: _Connection) -> None:
        with self._lock:
            self._open.add(conn)
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: _Connection, reason: str | None = None, answer: bytes | None = None) -> None:
        with self._lock:
            self._open.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if reason:   # counted before the client can see the answer
            self.stats[reason] += 1
        if answer:
            try:
                conn.sock.send(answer)   # best effort, never blocks: the socket is non-blocking
            except OSError:
                pass
        conn.sock.close()

    def _evict(self) -> bool:
        """Close the connection that has waited longest for its request head (then the longest idle)."""
        with self._lock:
            waiting = [c for c in self._open if not c.idle] or list(self._open)
        if not waiting:
            return False
        self._drop(min(waiting, key=lambda c: c.opened), "evicted", _status_line(503, "too many connections"))
        return True

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if conn.idle:   # the first byte of the next request: its head must be complete within header_timeout
            conn.idle = False
            conn.deadline = time.monotonic() + self.header_timeout
        conn.buffer += data
        self._dispatch_if_complete(conn)

    def _dispatch_if_complete(self, conn: _Connection) -> None:
        end = conn.buffer.find(b"\r\n\r\n")
        if end < 0:
            end = conn.buffer.find(b"\n\n")
            size = end + 2
        else:
            size = end + 4
        if end < 0:
            if len(conn.buffer) > MAX_HEAD:
                self._drop(conn, "too_large", _status_line(431, "request head too large"))
            return
        with self._lock:
            self._open.discard(conn)
            self._busy += 1
        self._selector.unregister(conn.sock)
        head, conn.buffer = bytes(conn.buffer[:size]), conn.buffer[size:]
        self.stats["requests"] += 1
        self._pool.submit(self._answer, conn, head)

    def _answer(self, conn: _Connection, head: bytes) -> None:
        keep = False
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(self.idle_timeout)
            handler = self.handler(conn.sock, conn.address, self, head)
            keep = not handler.close_connection
        except (OSError, TimeoutError) as exc:
            log.debug("%s: answer not delivered: %s", conn.address[0], exc)
            self.stats["write_failed"] += 1
        except Exception:
            log.exception("serve-logs: answering %s failed", conn.address[0])
        finally:
            with self._lock:
                self._busy -= 1
        if keep and not self._stop.is_set():
            try:
                conn.sock.setblocking(False)
            except OSError:
                conn.sock.close()
                return
            conn.idle = not conn.buffer
            now = time.monotonic()
            conn.opened = now
            conn.deadline = now + (self.idle_timeout if conn.idle else self.header_timeout)
            self._returned.put(conn)
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        else:
            conn.sock.close()

    def _take_back(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                conn = self._returned.get_nowait()
            except Empty:
                return
            self._add(conn)
            if conn.buffer:   # a pipelined request came with the last one
                self._dispatch_if_complete(conn)

    def _expire(self, now: float) -> None:
        with self._lock:
            late = [c for c in self._open if c.deadline <= now]
        for conn in late:
            if conn.idle:
                self._drop(conn, "idle_closed")
            else:
                self._drop(conn, "header_timeout", _status_line(408, "request head not received in time"))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LogServer:
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread:
            self._thread.join(timeout=5)
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            conns = list(self._open)
            self._open.clear()
        for conn in conns:
            conn.sock.close()
        try:
            self._selector.close()
        except Exception:
            pass
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> LogServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _status_line(code: int, text: str) -> bytes:
    phrase = HTTPStatus(code).phrase
    body = f"{code} {phrase}\n{text}\n".encode()
    return (f"HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


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
