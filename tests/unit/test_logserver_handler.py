"""serve-logs' request handling in this process, to the byte: the pure rules called directly, the handler
on a socket pair (exact answers, whether the connection stays open), and the server loop in a thread on
127.0.0.1 (timeouts, eviction, refusals, pipelining, workers that fail). Everything runs in the test
process, so mutation testing (`scripts/mutation logserver`) counts these tests for the code they run;
tests/unit/test_logserver.py has the attacks at scale (hundreds of slow clients, generated requests)."""

from __future__ import annotations

import calendar
import errno
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from harvester_cli import __version__
from harvester_cli.site.logserver import (
    PAGE_POLICY,
    LogServer,
    _Writer,
    aliases,
    content_type,
    port_from,
    prefix_from,
    public_parts,
)
from tests.support.harness import wait_until

pytestmark = pytest.mark.logs

LOGGER = "harvester_cli.site.logserver"
STAMP = calendar.timegm((2026, 1, 2, 3, 4, 5))          # every file's mtime: exact Last-Modified and listings
STAMP_HTTP = "Fri, 02 Jan 2026 03:04:05 GMT"
STAMP_LISTED = "2026-01-02 03:04"
WORKER = "/logs/workers/2026-01-01/Q/7"
PILOT_OUT = b"hello from the pilot\n"
# The headers every answer of the handler has after Server and Date, in this order.
COMMON = [("X-Content-Type-Options", "nosniff"), ("X-Robots-Tag", "noindex, nofollow"), ("Cache-Control", "no-cache")]


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(path, (STAMP, STAMP))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "logs"
    worker = root / "workers" / "2026-01-01" / "Q"
    put(worker / "7" / "pilot.out", PILOT_OUT)
    put(worker / "8" / "pilot.log", "new naming\n")            # a new worker: a URL of the old names finds these
    put(worker / "8" / "pilot.jdl", "new jdl\n")
    put(worker / "9" / "batch.log", "old naming\n")            # a worker made before: new URLs find these
    put(worker / "9" / "submit.sbatch", "old sbatch\n")
    put(worker / "10" / "pilot-0.log", "first pilot\n")
    put(worker / "11" / "pilot.log", "its own pilot.log\n")    # both names: each URL its own file
    put(worker / "11" / "batch.log", "its own batch.log\n")
    (worker / "12").mkdir()
    (worker / "12" / "pilot.log").symlink_to("../../../../commands/submit.log")   # an alias must not leak it
    put(root / "other" / "pilot.log", "not a worker's\n")
    put(root / "commands" / "submit.log", "private command log\n")
    put(root / ".state" / "alerts.json", "hidden state\n")
    put(root / "workers" / ".hidden.out", "hidden pilot\n")
    (root / "workers" / ".alias.out").symlink_to("2026-01-01/Q/7/pilot.out")   # a hidden name for a public file
    put(root / "workers" / "a\\b.out", "backslash\n")
    put(root / "workers" / "\ufffd.out", "replacement character\n")
    put(tmp_path / "logs-old" / "old.out", "a sibling tree\n")
    return root


PAGES = {"/status": ("text/html; charset=utf-8", lambda: b"<p>status</p>"),
         "/metrics": ("text/plain; version=0.0.4; charset=utf-8", lambda: b"up 1\n")}


@pytest.fixture
def servers():
    """LogServer(...) -> a server closed after the test; start=True runs its loop in a thread."""
    made: list[LogServer] = []

    def make(root, prefix="/logs", *, start=False, **options) -> LogServer:
        server = LogServer(root, "127.0.0.1", 0, prefix, **options)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in made:
        server.stop()


# -- the handler on a socket pair: one request head in, the exact answer out ---------------------------


def answer(server: LogServer, head: bytes | str):
    """The handler's whole answer to one request head, and the handler (close_connection says whether the
    connection would stay open). The server's loop need not run: the handler only writes to its socket."""
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.settimeout(5)
        head = head.encode() if isinstance(head, str) else head
        try:
            handler = server.handler(ours, ("127.0.0.1", 50000), server, head)
        finally:
            ours.close()
        data = b""
        while chunk := theirs.recv(65536):
            data += chunk
    return data, handler


def get(path: str, method: str = "GET", extra: str = "", version: str = "HTTP/1.1") -> str:
    return f"{method} {path} {version}\r\nHost: logs.example\r\n{extra}\r\n"


def parse(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers as sent (names' case kept, in order, Server and Date checked and left out), body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    assert headers[0] == ("Server", f"harvester-cli-logs/{__version__} ") and headers[1][0] == "Date", headers
    return status, headers[2:], body


def refusal(status: str, text: str = "", method: str = "GET", extra: list | None = None) -> tuple:
    """What _error sends: a short plain-text body and Connection: close."""
    body = f"{status}\n{text}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *COMMON,
               *(extra or []), ("Connection", "close")]
    return f"HTTP/1.1 {status}", headers, b"" if method == "HEAD" else body


def test_a_log_file_is_plain_text_with_its_length_and_mtime_and_the_connection_stays_open(tree, servers):
    data, handler = answer(servers(tree), get(f"{WORKER}/pilot.out"))
    assert parse(data) == ("HTTP/1.1 200 OK",
                           [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "21"), *COMMON,
                            ("Last-Modified", STAMP_HTTP)], PILOT_OUT)
    assert handler.close_connection is False
    # A worker must not keep a slow reader for ever: the answer's deadline is max(60 s, 10 x idle_timeout).
    assert 299 < handler.wfile._deadline - time.monotonic() <= 300


def test_head_has_the_headers_of_get_and_no_body_and_a_range_is_not_served_apart(tree, servers):
    server = servers(tree)
    data, _ = answer(server, get(f"{WORKER}/pilot.out", "HEAD"))
    assert parse(data) == ("HTTP/1.1 200 OK",
                           [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "21"), *COMMON,
                            ("Last-Modified", STAMP_HTTP)], b"")
    # Ranges are not supported: the whole file, 200 (never a 206 a client would splice wrongly).
    data, _ = answer(server, get(f"{WORKER}/pilot.out", extra="Range: bytes=0-4\r\n"))
    status, _, body = parse(data)
    assert status == "HTTP/1.1 200 OK" and body == PILOT_OUT


def test_the_answer_deadline_is_at_least_a_minute_and_ten_idle_timeouts_beyond(tree, servers):
    assert servers(tree, idle_timeout=1).handler.deadline_seconds == 60.0
    assert servers(tree, idle_timeout=30).handler.deadline_seconds == 300.0


def test_a_missing_or_refused_path_is_404_with_connection_close_and_head_gets_no_body(tree, servers):
    server = servers(tree)
    for method in ("GET", "HEAD"):
        data, handler = answer(server, get("/logs/workers/none.out", method))
        assert parse(data) == refusal("404 Not Found", method=method)
        assert handler.close_connection is True   # even on HTTP/1.1: a refusal ends the connection


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_write_methods_get_405_with_allow_and_the_reason(tree, servers, method):
    data, handler = answer(servers(tree), get(f"{WORKER}/pilot.out", method, "Content-Length: 0\r\n"))
    assert parse(data) == refusal("405 Method Not Allowed", f"{method} is not allowed: this server is read-only",
                                  extra=[("Allow", "GET, HEAD")])
    assert handler.close_connection is True
    assert (tree / "workers" / "2026-01-01" / "Q" / "7" / "pilot.out").read_bytes() == PILOT_OUT


def test_http_0_9_and_2_0_and_malformed_request_lines_get_one_status_line_each(tree, servers):
    server = servers(tree)
    data, _ = answer(server, get(f"{WORKER}/pilot.out", version="HTTP/0.9"))
    assert parse(data) == refusal("505 HTTP Version Not Supported", "HTTP/0.9 is not served: use HTTP/1.0 or 1.1")
    # http.server's own refusals: exactly one answer each, with a status line, and the connection closed.
    for head, status in ((get("/logs/", version="HTTP/2.0"), "HTTP/1.1 505 Invalid HTTP version (2.0)"),
                         (get("/logs/", version="HTTP/x"), "HTTP/1.1 400 Bad request version ('HTTP/x')"),
                         ("GET /logs/ HTTP/1.1 extra\r\n\r\n", "HTTP/1.1 400 Bad request version ('extra')"),
                         ("GET\r\n\r\n", "HTTP/1.1 400 Bad request syntax ('GET')")):
        data, handler = answer(server, head)
        assert data.startswith(status.encode() + b"\r\n") and data.count(b"HTTP/1.") == 1, data
        assert (b"\r\nConnection: close\r\n" in data) and handler.close_connection is True


def test_too_many_headers_is_431_with_a_status_line_even_when_the_request_says_http_0_9(tree, servers):
    """http.server refuses a head of more than 100 headers through send_error, whose answer to an HTTP/0.9
    request would be a bare body: this server's answer has its status line all the same."""
    server = servers(tree)
    many = "".join(f"X-{i}: {i}\r\n" for i in range(101))
    for version in ("HTTP/1.1", "HTTP/0.9"):
        data, handler = answer(server, get(f"{WORKER}/pilot.out", extra=many, version=version))
        assert data.startswith(b"HTTP/1.1 431 Too many headers\r\n"), data
        assert b"got more than 100 headers" in data and PILOT_OUT not in data
        assert handler.close_connection is True


@pytest.mark.parametrize("version, extra, stays_open", [
    ("HTTP/1.1", "", True),
    ("HTTP/1.1", "Connection: close\r\n", False),
    ("HTTP/1.0", "", False),                                   # HTTP/1.0 closes unless it asks for keep-alive
    ("HTTP/1.0", "Connection: keep-alive\r\n", True),
    ("HTTP/1.1", "Content-Length: 0\r\n", True),               # an empty body is no body
    ("HTTP/1.1", "Content-Length: \r\n", True),
    ("HTTP/1.1", "Content-Length: 5\r\n", False),              # a body not read: the next bytes are not a head
    ("HTTP/1.1", "Transfer-Encoding: chunked\r\n", False),
])
def test_the_connection_stays_open_only_when_the_next_bytes_are_a_request_head(tree, servers, version, extra,
                                                                               stays_open):
    data, handler = answer(servers(tree), get(f"{WORKER}/pilot.out", extra=extra, version=version))
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(PILOT_OUT)
    assert handler.close_connection is (not stays_open)


def test_a_request_line_without_a_version_is_answered_with_a_status_line_and_closed(tree, servers):
    data, handler = answer(servers(tree), f"GET {WORKER}/pilot.out\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(PILOT_OUT)
    assert handler.close_connection is True


def test_robots_txt_denies_every_crawler(tree, servers):
    server = servers(tree)
    for method, body in (("GET", b"User-agent: *\nDisallow: /\n"), ("HEAD", b"")):
        data, _ = answer(server, get("/robots.txt", method))
        assert parse(data) == ("HTTP/1.1 200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                                   ("Content-Length", "26"), *COMMON], body)


def test_the_status_page_may_load_nothing_and_metrics_are_plain(tree, servers):
    server = servers(tree, pages=PAGES)
    data, _ = answer(server, get("/status"))
    assert parse(data) == ("HTTP/1.1 200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "13"),
                                               *COMMON, ("Content-Security-Policy", PAGE_POLICY)], b"<p>status</p>")
    data, _ = answer(server, get("/metrics", "HEAD"))
    assert parse(data) == ("HTTP/1.1 200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                               ("Content-Length", "5"), *COMMON], b"")


def test_a_page_that_fails_is_503_naming_the_error_type_and_the_reason_goes_to_the_log(tree, servers, caplog):
    def locked() -> bytes:
        raise OSError("database is locked")

    caplog.set_level(logging.WARNING, logger=LOGGER)
    data, _ = answer(servers(tree, pages={"/status": ("text/html", locked)}), get("/status"))
    assert parse(data) == refusal("503 Service Unavailable", "/status is not available now: OSError")
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER] == [
        ("WARNING", "/status: OSError: database is locked")]


def test_the_server_root_redirects_to_the_status_page_only_under_a_prefix_with_one(tree, servers):
    data, _ = answer(servers(tree, pages=PAGES), get("/"))
    assert data.startswith(b"HTTP/1.1 302 Found\r\n")
    assert parse(data)[1:] == ([("Location", "/status"), ("Content-Length", "0")], b"")
    # Everything else under that server is what it is, not the redirect.
    assert answer(servers(tree, pages=PAGES), get(f"{WORKER}/pilot.out"))[0].endswith(PILOT_OUT)
    # No status page: nothing at / (the tree is under /logs/).
    data, _ = answer(servers(tree, pages={"/metrics": PAGES["/metrics"]}), get("/"))
    assert parse(data)[0] == "HTTP/1.1 404 Not Found"
    # The tree at /: its listing, with the pages linked first (sorted) and no way up.
    data, _ = answer(servers(tree, "/", pages=PAGES), get("/"))
    status, _, body = parse(data)
    assert status == "HTTP/1.1 200 OK"
    rows = body.split(b"<pre>\n")[1].split(b"\n</pre>")[0].split(b"\n")
    assert rows[:2] == [b'<a href="/metrics">/metrics</a>', b'<a href="/status">/status</a>']
    assert [r.split(b'"')[1] for r in rows[2:]] == [b"other/", b"workers/"]   # not commands/ nor .state/


@pytest.mark.parametrize("prefix, path, location", [
    ("/logs", "/logs", "/logs/"),                                   # the prefix itself, without its slash
    ("/logs", "/logs/workers", "/logs/workers/"),
    ("/logs", "/logs/workers/2026-01-01", "/logs/workers/2026-01-01/"),
    ("/pilotX", "/pilotX", "/pilotX/"),                             # only slashes are stripped from a prefix
])
def test_a_directory_without_its_slash_is_a_permanent_redirect_to_it(tree, servers, prefix, path, location):
    data, _ = answer(servers(tree, prefix), get(path))
    assert data.startswith(b"HTTP/1.1 301 Moved Permanently\r\n")
    assert parse(data)[1:] == ([("Location", location), ("Content-Length", "0")], b"")


def test_the_redirect_of_a_directory_whose_name_needs_escaping_leads_to_it(tree, servers):
    put(tree / "workers" / "a b" / "pilot.out", "spaced\n")
    server = servers(tree)
    data, _ = answer(server, get("/logs/workers/a%20b"))
    location = dict(parse(data)[1])["Location"]
    assert location == "/logs/workers/a%20b/"
    assert parse(answer(server, get(location))[0])[0] == "HTTP/1.1 200 OK"


def listing_row(name: str, size: str, href: str = "", shown: str = "") -> str:
    """A row of a listing: the link, padded to column 50 (at least one space), the mtime and the size."""
    return (f'<a href="{href or name}">{shown or name}</a>{" " * max(1, 50 - len(name))}{STAMP_LISTED}  '
            f'{size:>12}')


def test_a_listing_is_sorted_escaped_aligned_and_shows_only_what_may_be_served(tree, servers):
    listed = tree / "workers" / "a&b"
    put(listed / "pilot.out", "12345")
    put(listed / "b & <c>.log", "xy")
    put(listed / ("long" * 13), "z")                                   # 52 characters: one space after it
    (listed / "sub").mkdir()
    put(listed / ".hidden.out", "hidden")                              # sorted first: the rest is still listed
    (listed / ".alias.out").symlink_to("pilot.out")                     # a hidden name, a public target
    (listed / "0-broken.out").symlink_to("gone.out")                    # nothing to stat: left out
    (listed / "1-private.log").symlink_to("../../commands/submit.log")  # a visible name, a private target
    (listed / "2-outside.out").symlink_to(tree.parent / "logs-old" / "old.out")
    os.utime(listed / "sub", (STAMP, STAMP))
    data, _ = answer(servers(tree), get("/logs/workers/a%26b/"))
    rows = ['<a href="../">../</a>', listing_row("b & <c>.log", "2", "b%20%26%20%3Cc%3E.log", "b &amp; &lt;c&gt;.log"),
            listing_row("long" * 13, "1"), listing_row("pilot.out", "5"), listing_row("sub/", "-")]
    title = "/logs/workers/a&amp;b/"
    body = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><meta name="robots" content="noindex, nofollow">'
            f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1><pre>\n" + "\n".join(rows)
            + "\n</pre></body></html>\n").encode()
    assert parse(data) == ("HTTP/1.1 200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                               ("Content-Length", str(len(body))), *COMMON], body)


def test_the_listing_of_the_prefix_has_no_parent_link_and_hides_private_and_hidden_tops(tree, servers):
    data, _ = answer(servers(tree, pages=PAGES), get("/logs/"))
    status, _, body = parse(data)
    assert status == "HTTP/1.1 200 OK"
    rows = body.split(b"<pre>\n")[1].split(b"\n</pre>")[0].split(b"\n")
    assert [r.split(b'"')[1] for r in rows] == [b"other/", b"workers/"]   # no ../, no commands/, no .state/


def test_a_file_name_that_is_not_utf8_does_not_break_its_directorys_listing(tree, servers):
    odd = tree / "workers" / "odd"
    put(odd / "pilot.out", "fine\n")
    put(Path(os.fsdecode(bytes(odd) + b"/bad\xff.out")), "odd name\n")
    data = Client(servers(tree, start=True)).send(get("/logs/workers/odd/", extra="Connection: close\r\n")).rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b'href="pilot.out"' in data


def test_a_directory_that_cannot_be_read_or_a_file_that_cannot_be_opened_is_404(tree, servers, monkeypatch):
    """Gone between the check and the use (or unreadable): a clean 404, not a dropped connection."""
    from harvester_cli.site import logserver

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    server = servers(tree)
    with monkeypatch.context() as patch:
        patch.setattr(logserver, "open", denied, raising=False)
        assert parse(answer(server, get(f"{WORKER}/pilot.out"))[0]) == refusal("404 Not Found")
    with monkeypatch.context() as patch:
        patch.setattr(logserver.os, "scandir", denied)
        assert parse(answer(server, get(f"{WORKER}/"))[0]) == refusal("404 Not Found")


@pytest.mark.parametrize("path", [
    "/logs/commands",                                  # each command's private log, by its name
    "/logs/commands/",
    "/logs/commands/submit.log",
    "/logs/.state/alerts.json",
    "/logs/workers/.hidden.out",
    "/logs/workers/.alias.out",                        # a hidden name, even for a public file
    "/logs/workers/%2ealias.out",
    f"{WORKER}/./pilot.out",
    f"{WORKER}/../7/pilot.out",
    f"{WORKER}/pilot.out%00",                          # a NUL: refused, not an error in realpath
    f"{WORKER}/pilot.out%00.txt",
    "/logs/workers/a%5Cb.out",                         # a backslash: refused even though such a file exists
    "/logs/workers/%ff.out",                           # not UTF-8: refused, not read as U+FFFD (that file exists)
    "/logs-old/old.out",                               # a sibling of the prefix
    "/logsold.out",
    "/elsewhere/pilot.out",
    "/logs/missing",
    "/logs/workers/2026-01-01/Q/8/missing.out",        # under workers/, no alias either
    "/logs/other/batch.log",                           # old names are aliases under workers/ only
    "/logs/workers/2026-01-01/Q/12/batch.log",         # an alias that links to a private file
])
def test_refused_paths_get_a_clean_404(tree, servers, path):
    data, _ = answer(servers(tree), get(path))
    assert parse(data) == refusal("404 Not Found"), data


@pytest.mark.parametrize("worker, name, served", [
    ("8", "batch.log", "new naming\n"),                # an old URL of a new worker
    ("8", "arc-errors.log", "new naming\n"),
    ("8", "submit.sub", "new jdl\n"),
    ("8", "pilot.log", "new naming\n"),
    ("9", "pilot.log", "old naming\n"),                # a new URL of an old worker
    ("9", "pilot.jdl", "old sbatch\n"),                # submit.sub is not there: submit.sbatch is
    ("9", "pilot-0.log", "old naming\n"),
    ("10", "batch.log", "first pilot\n"),              # pilot.log is not there: pilot-0.log is
    ("11", "pilot.log", "its own pilot.log\n"),        # a file that exists is itself, whatever its aliases
    ("11", "batch.log", "its own batch.log\n"),
])
def test_a_workers_file_is_found_under_its_old_or_new_name(tree, servers, worker, name, served):
    data, _ = answer(servers(tree), get(f"/logs/workers/2026-01-01/Q/{worker}/{name}"))
    status, headers, body = parse(data)
    assert status == "HTTP/1.1 200 OK" and body == served.encode()


def test_each_request_is_logged_with_the_client_and_the_request_line(tree, servers, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    answer(servers(tree), get(f"{WORKER}/pilot.out"))
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f'127.0.0.1 "GET {WORKER}/pilot.out HTTP/1.1" 200 -']


def test_a_write_past_the_answers_deadline_gives_up_instead_of_blocking_the_worker():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert _Writer(ours, time.monotonic() + 60).write(b"abc") == 3 and theirs.recv(3) == b"abc"
        with pytest.raises(TimeoutError, match="^answer took too long: the client does not read$"):
            _Writer(ours, time.monotonic() - 1).write(b"late")


# -- the rules on their own -------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("pilot.out", "text/plain; charset=utf-8"),
    ("PILOT.ERR", "text/plain; charset=utf-8"),        # the case of a name does not matter
    ("pilot.sbatch", "text/plain; charset=utf-8"),
    ("batch.log.1", "text/plain; charset=utf-8"),      # rotated logs stay text
    ("pilot.out.2", "text/plain; charset=utf-8"),
    ("pilot.err.old", "text/plain; charset=utf-8"),
    ("page.html", "text/plain; charset=utf-8"),        # never rendered as a page
    ("data.csv", "text/plain; charset=utf-8"),
    ("core.tar.gz", "application/gzip"),
    ("pilot.log.gz", "text/plain; charset=utf-8"),     # a rotated log name wins over its compression
    ("plot.png", "image/png"),
    ("payload.unknownsuffix", "application/octet-stream"),
])
def test_content_types_keep_logs_plain_text_and_never_html(name, expected):
    assert content_type(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("batch.log", ("pilot.log", "pilot-0.log")),
    ("arc-errors.log", ("pilot.log", "pilot-0.log")),
    ("submit.sub", ("pilot.jdl", "pilot-0.jdl")),
    ("submit.sbatch", ("pilot.jdl", "pilot-0.jdl")),
    ("pilot.log", ("batch.log", "arc-errors.log")),
    ("pilot-3.log", ("batch.log", "arc-errors.log")),
    ("pilot.jdl", ("submit.sub", "submit.sbatch")),
    ("pilot.out", ()),
    ("other.log", ()),
    ("xpilot.log", ()),
    ("pilot-x.jdl", ()),
])
def test_old_and_new_names_of_a_workers_files(name, expected):
    assert aliases(name) == expected


def test_public_parts_of_a_resolved_path(tmp_path):
    root = str(tmp_path / "logs")
    assert public_parts(root, root) == []
    assert public_parts(root, f"{root}/workers/2026-01-01/pilot.out") == ["workers", "2026-01-01", "pilot.out"]
    assert public_parts(root, f"{root}/other") == ["other"]
    for outside in (f"{root}-old/workers/x.out", f"{root}-old", str(tmp_path), "/etc/passwd", f"{root}x"):
        assert public_parts(root, outside) is None, outside
    for private in (f"{root}/commands", f"{root}/commands/submit.log", f"{root}/.state/alerts.json",
                    f"{root}/workers/.hidden.out", f"{root}/workers/.d/pilot.out"):
        assert public_parts(root, private) is None, private


@pytest.mark.parametrize("log_url, prefix, port", [
    (None, "/", 8080),                                  # the command's default port
    ("", "/", 8080),
    ("http://ce.example:8443/logs", "/logs/", 8443),
    ("http://ce.example/logs/", "/logs/", 8080),
    ("http://ce.example:9000", "/", 9000),
    ("http://ce.example:99999/logs", "/logs/", 8080),   # an impossible port: the default
])
def test_prefix_and_port_come_from_log_url(log_url, prefix, port):
    assert prefix_from(log_url) == prefix and port_from(log_url) == port
    assert port_from(log_url, 1234) == (1234 if port == 8080 else port)


@pytest.mark.parametrize("given, prefix", [
    ("/", "/"), ("", "/"), ("logs", "/logs/"), ("/logs", "/logs/"), ("/logs/", "/logs/"), ("//logs//", "/logs/"),
    ("/a/./b/../c", "/a/c/"), ("/pilotX", "/pilotX/"),
])
def test_the_prefix_is_normalised_and_the_url_and_root_are_what_the_command_prints(tmp_path, servers, given, prefix):
    (tmp_path / "logs").mkdir()
    (tmp_path / "link").symlink_to("logs")
    server = servers(tmp_path / "link", given)
    assert server.prefix == prefix and server.handler.prefix == prefix
    assert server.url == f"http://127.0.0.1:{server.address[1]}{prefix}"
    assert server.root == (tmp_path / "logs").resolve()   # the real root: resolved paths are compared with it


def test_an_ipv6_address_is_served_and_bracketed_in_the_url(tree):
    try:   # asked of the system, not of LogServer: its failure to listen on ::1 is what this test is for
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with LogServer(tree, "::1", 0, "/logs") as server:
        assert server.url == f"http://[::1]:{server.address[1]}/logs/"
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(get(f"{WORKER}/pilot.out", extra="Connection: close\r\n").encode())
            assert read_all(sock).endswith(PILOT_OUT)


# -- the loop: real sockets on 127.0.0.1 ----------------------------------------------------------------


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Client:
    """One connection to the server; reads answers one at a time (by Content-Length) or to the end."""

    def __init__(self, server: LogServer, timeout: float = 5.0):
        self.sock = socket.create_connection(server.address, timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes | str) -> Client:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)
        return self

    def response(self, head_only: bool = False) -> tuple[str, dict, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        length = 0 if head_only else int(headers.get("Content-Length", 0))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def rest(self) -> bytes:
        """Everything up to the server's close."""
        data, self.buffer = self.buffer + read_all(self.sock), b""
        return data

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed by the server; unread: {self.buffer!r}")
        self.buffer += chunk


def status_line(code: int, phrase: str, text: str) -> bytes:
    body = f"{code} {phrase}\n{text}\n".encode()
    return (f"HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


TIMED_OUT = status_line(408, "Request Timeout", "request head not received in time")
TOO_MANY = status_line(503, "Service Unavailable", "too many connections")
TOO_LARGE = status_line(431, "Request Header Fields Too Large", "request head too large")


def waiting_heads(server: LogServer) -> list[int]:
    """How many bytes of a head the loop holds per connection: the only sign that it has read what a test
    sent, short of sleeping."""
    with server._lock:
        return sorted(len(c.buffer) for c in server._open)


def idle_connections(server: LogServer) -> int:
    with server._lock:
        return sum(1 for c in server._open if c.idle)


def named_threads(server: LogServer) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(server.name)]


def test_a_head_is_complete_within_header_timeout_of_the_connection_or_408(tree, servers):
    server = servers(tree, start=True, header_timeout=0.3, idle_timeout=30)
    started = time.monotonic()
    client = Client(server).send(f"GET {WORKER}/pilot.out HTTP/1.1\r\nHost: x\r\n")
    assert client.rest() == TIMED_OUT
    # Not before the deadline, and not much after it (the loop sleeps until the soonest deadline).
    assert 0.28 <= time.monotonic() - started < 0.95
    assert dict(server.stats) == {"accepted": 1, "header_timeout": 1}


def test_an_idle_keep_alive_connection_is_closed_quietly_after_idle_timeout(tree, servers):
    server = servers(tree, start=True, header_timeout=5, idle_timeout=0.4)
    client = Client(server, timeout=3)
    assert client.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    answered = time.monotonic()
    assert client.rest() == b""   # no 408: it asked for nothing
    assert time.monotonic() - answered >= 0.35
    assert dict(server.stats) == {"accepted": 1, "requests": 1, "idle_closed": 1}


def test_the_next_head_on_a_keep_alive_connection_has_header_timeout_from_its_first_byte(tree, servers):
    server = servers(tree, start=True, header_timeout=0.5, idle_timeout=30)
    client = Client(server)
    assert client.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    wait_until(lambda: idle_connections(server) == 1, 5, 0.01, "the connection back in the loop, idle")
    first_byte = time.monotonic()
    assert client.send("GET /logs/ HTTP/1.1\r\n").rest() == TIMED_OUT
    assert time.monotonic() - first_byte >= 0.45
    assert server.stats["header_timeout"] == 1 and server.stats["idle_closed"] == 0


def test_pipelined_requests_are_answered_in_order_with_crlf_or_bare_lf_heads(tree, servers):
    server = servers(tree, start=True)
    client = Client(server)
    client.send(get(f"{WORKER}/pilot.out") + get(f"{WORKER}/pilot.out", "HEAD") + get("/logs/other/pilot.log")
                + f"GET /robots.txt HTTP/1.1\nHost: x\n\nGET {WORKER}/pilot.out HTTP/1.1\nHost: x\n\n")
    assert client.response()[2] == PILOT_OUT
    status, headers, _ = client.response(head_only=True)
    assert status == "HTTP/1.1 200 OK" and headers["Content-Length"] == "21"
    assert client.response()[2] == b"not a worker's\n"
    assert client.response()[2] == b"User-agent: *\nDisallow: /\n"
    assert client.response()[2] == PILOT_OUT
    assert client.buffer == b"" and server.stats["requests"] == 5 and server.stats["accepted"] == 1


def test_a_partial_head_behind_a_pipelined_request_has_header_timeout_not_idle_timeout(tree, servers):
    server = servers(tree, start=True, header_timeout=0.3, idle_timeout=30)
    client = Client(server, timeout=3)
    client.send(get(f"{WORKER}/pilot.out") + "GET /logs/ HTTP/1.1\r\nHost")
    assert client.response()[2] == PILOT_OUT
    assert client.rest() == TIMED_OUT


def test_a_head_sent_in_pieces_is_put_together(tree, servers):
    server = servers(tree, start=True)
    client = Client(server)
    first = f"GET {WORKER}/pilot.out HTTP/1.1\r\n"
    client.send(first)
    wait_until(lambda: waiting_heads(server) == [len(first)], 5, 0.01, "the first piece read")
    assert client.send("Host: x\r\n\r\n").response()[2] == PILOT_OUT


def test_a_head_of_max_head_bytes_is_waited_for_and_one_byte_more_is_431(tree, servers):
    server = servers(tree, start=True)
    line = f"GET {WORKER}/pilot.out HTTP/1.1\r\nX-Pad: "
    fits = Client(server).send(line + "a" * (65536 - len(line)))
    wait_until(lambda: waiting_heads(server) == [65536], 5, 0.01, "64 KiB read")
    assert fits.send("\r\n\r\n").response()[2] == PILOT_OUT
    too_large = Client(server)
    try:
        too_large.send(line + "a" * (65537 - len(line)))
    except OSError:   # closed while sending: the answer is still to read
        pass
    assert too_large.rest() == TOO_LARGE
    assert server.stats["too_large"] == 1


def test_blank_lines_alone_are_no_request_and_the_connection_is_closed_at_once(tree, servers):
    server = servers(tree, start=True, header_timeout=30)
    assert Client(server, timeout=3).send("\r\n\r\n").rest() == b""
    assert Client(server, timeout=3).send("\n\n").rest() == b""


def test_a_client_that_closes_or_resets_mid_head_is_dropped_at_once_and_that_is_no_error(tree, servers, caplog):
    server = servers(tree, start=True, header_timeout=30)
    partial = b"GET /logs/ HTTP/1.1\r\n"
    for linger in (None, struct.pack("ii", 1, 0)):   # a plain close, then a reset
        sock = socket.create_connection(server.address, timeout=5)
        sock.sendall(partial)
        wait_until(lambda: waiting_heads(server) == [len(partial)], 5, 0.01, "the head's start read")
        if linger:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()
        wait_until(lambda: server.open_connections == 0, 5, 0.01, "the connection dropped")
    assert server.stats["header_timeout"] == 0 and server.stats["accepted"] == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []   # routine, not a failure


def test_at_the_cap_the_longest_waiting_head_goes_first_then_the_longest_idle(tree, servers):
    server = servers(tree, start=True, max_connections=2, header_timeout=30, idle_timeout=30)
    idle = Client(server)
    assert idle.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    wait_until(lambda: idle_connections(server) == 1, 5, 0.01, "the first connection idle")
    waiting = Client(server).send("GET /logs/ HTTP/1.1\r\n")
    wait_until(lambda: waiting_heads(server) == [0, 21], 5, 0.01, "the second one's head read")
    newer = Client(server)   # the cap: the waiting head goes, although the idle connection is older
    assert waiting.rest() == TOO_MANY
    assert newer.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    wait_until(lambda: idle_connections(server) == 2, 5, 0.01, "both connections idle")
    last = Client(server)    # only idle ones left: the longest idle goes
    assert idle.rest() == TOO_MANY
    assert newer.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    assert last.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    assert server.stats["evicted"] == 2 and server.stats["accepted"] == 4 and server.stats["requests"] == 4


class SlowPage:
    """A /status page that holds its worker until released (a slow state database)."""

    def __init__(self):
        self.calls = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        self.release.wait(10)
        return b"<p>slow</p>"


@pytest.fixture
def slow_page():
    page = SlowPage()
    yield page
    page.release.set()


def test_busy_workers_count_toward_the_cap_and_when_all_are_busy_new_clients_are_refused(tree, servers, slow_page):
    server = servers(tree, start=True, pages={"/status": ("text/html", slow_page)}, max_connections=2, threads=1)
    first = Client(server).send(get("/status"))
    wait_until(lambda: slow_page.calls == 1, 5, 0.01, "the first request in the page")
    assert server.open_connections == 1
    partial = "GET /status HTTP/1.1\r\n"
    waiting = Client(server).send(partial)
    wait_until(lambda: waiting_heads(server) == [len(partial)], 5, 0.01, "a head waiting")
    assert server.open_connections == 2
    queued = Client(server)       # full (one busy, one waiting): the waiting one goes
    assert waiting.rest() == TOO_MANY
    queued.send(get("/status"))   # a second request for the one worker: queued, and counted
    wait_until(lambda: server.stats["requests"] == 2, 5, 0.01, "the second request handed over")
    assert server.open_connections == 2
    refused = [Client(server, timeout=3) for _ in range(2)]   # every slot busy: no one to shed
    for client in refused:
        assert unanswered(client)
    # (counted just after the close the client sees)
    wait_until(lambda: server.stats["refused"] == 2, 5, 0.01, "two refusals counted")
    assert server.stats["evicted"] == 1 and server.stats["accepted"] == 3
    assert sorted(t.name for t in named_threads(server)) == [server.name, f"{server.name}_0"]   # loop, 1 worker
    assert next(t for t in named_threads(server) if t.name == server.name).daemon
    slow_page.release.set()
    assert first.response()[2] == b"<p>slow</p>" and queued.response()[2] == b"<p>slow</p>"
    first.close()
    queued.close()
    wait_until(lambda: server.open_connections == 0, 5, 0.01, "both connections closed")


def big_file_requests(server: LogServer, tree: Path, count: int) -> list[socket.socket]:
    """Clients that ask for 16 MiB (more than any socket buffer) and read nothing."""
    put(tree / "workers" / "big.out", os.urandom(1024) * (16 * 1024))
    clients = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        sock.sendall(get("/logs/workers/big.out").encode())
        clients.append(sock)
    return clients


def test_a_client_that_does_not_read_is_given_up_after_idle_timeout(tree, servers, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = servers(tree, start=True, threads=2, idle_timeout=0.3)
    clients = big_file_requests(server, tree, 2)
    try:
        wait_until(lambda: server.stats["requests"] == 2 and server.open_connections == 0, 10, 0.02,
                   "both answers given up and their connections closed")
    finally:
        for sock in clients:
            sock.close()
    assert [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()] == [
        "127.0.0.1 Request timed out: TimeoutError('timed out')"] * 2
    assert Client(server).send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT   # the workers are free


def test_a_client_gone_during_its_answer_is_counted_and_its_connection_closed(tree, servers, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = servers(tree, start=True, threads=2)
    clients = big_file_requests(server, tree, 2)
    wait_until(lambda: server.stats["requests"] == 2, 5, 0.01, "both requests handed to the workers")
    for sock in clients:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # gone: a reset
        sock.close()
    wait_until(lambda: server.stats["write_failed"] == 2 and server.open_connections == 0, 5, 0.01,
               "both answers failed and their connections closed")
    failures = sorted(r.getMessage() for r in caplog.records if "not delivered" in r.getMessage())
    assert len(failures) == 2 and all(m in ("127.0.0.1: answer not delivered: [Errno 104] Connection reset by peer",
                                            "127.0.0.1: answer not delivered: [Errno 32] Broken pipe")
                                      for m in failures), failures


def unanswered(client: Client) -> bool:
    """The server closed the connection without a byte of answer (a reset if it left bytes unread)."""
    try:
        return client.rest() == b""
    except ConnectionResetError:
        return True


def test_a_failing_event_drops_only_its_connection_and_the_loop_goes_on(tree, servers, caplog):
    server = servers(tree, start=True)
    original_read, original_accept = server._read, server._accept

    def read_fails(conn):
        server._read = original_read
        raise RuntimeError("a bug in reading")

    def accept_fails():
        server._accept = original_accept
        raise RuntimeError("a bug in accepting")

    server._read = read_fails
    assert unanswered(Client(server, timeout=3).send(get(f"{WORKER}/pilot.out")))
    server._accept = accept_fails
    assert Client(server).send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT   # accepted next round
    assert [(r.levelname, r.getMessage(), r.exc_info[1].args[0]) for r in caplog.records if r.name == LOGGER] == [
        ("ERROR", "serve-logs: event of 127.0.0.1 failed", "a bug in reading"),
        ("ERROR", "serve-logs: event of listen failed", "a bug in accepting")]


def test_a_failing_answer_closes_its_connection_and_frees_its_slot(tree, servers, caplog):
    server = servers(tree, start=True)
    handler = server.handler

    def broken(*args):
        raise RuntimeError("a bug in the handler")

    server.handler = broken
    assert unanswered(Client(server, timeout=3).send(get(f"{WORKER}/pilot.out")))
    wait_until(lambda: server.open_connections == 0, 5, 0.01, "the slot free")
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER] == [
        ("ERROR", "serve-logs: answering 127.0.0.1 failed")]
    server.handler = handler
    assert Client(server).send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT


def test_out_of_file_descriptors_the_longest_waiting_head_is_shed_for_the_new_client(tree, servers):
    class FullDescriptorTable:
        """The listening socket while the process has no descriptor left: the next accept fails."""

        def __init__(self, sock):
            self._sock, self.failures = sock, 1

        def accept(self):
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self._sock.accept()

        def __getattr__(self, name):
            return getattr(self._sock, name)

    server = servers(tree, start=True, header_timeout=30)
    waiting = Client(server).send("GET /logs/ HTTP/1.1\r\n")
    wait_until(lambda: waiting_heads(server) == [21], 5, 0.01, "a head waiting")
    server.sock = FullDescriptorTable(server.sock)
    newcomer = Client(server)
    assert waiting.rest() == TOO_MANY
    assert newcomer.send(get(f"{WORKER}/pilot.out")).response()[2] == PILOT_OUT
    assert server.stats["evicted"] == 1 and server.sock.failures == 0


def test_stop_returns_at_once_and_starts_no_queued_answer(tree, servers, slow_page):
    server = servers(tree, start=True, pages={"/status": ("text/html", slow_page)}, threads=1)
    answered = Client(server).send(get("/status"))
    wait_until(lambda: slow_page.calls == 1, 5, 0.01, "the first request in the page")
    queued = Client(server).send(get("/status"))
    wait_until(lambda: server.stats["requests"] == 2, 5, 0.01, "the second request queued")
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive()   # did not wait for the worker still in the page
    slow_page.release.set()
    server._pool.shutdown(wait=True)
    assert slow_page.calls == 1     # the queued request was cancelled, not answered after stop
    answered.close()
    queued.close()


def test_an_idle_server_sleeps_in_select(tree, servers):
    """No busy loop: with nothing to do the loop waits (up to a second) for an event or a deadline."""
    servers(tree, start=True)
    cpu = time.process_time()
    threading.Event().wait(0.5)   # a window to measure, not a wait for a condition
    assert time.process_time() - cpu < 0.2


def test_closing_under_a_running_loop_ends_it_quietly(tree, servers, monkeypatch):
    """close() without stop(), as the loop starts or while it selects: the loop ends, no thread exception."""
    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    server = servers(tree, start=True)
    server.close()
    server._thread.join(5)
    assert not server._thread.is_alive() and not failures
