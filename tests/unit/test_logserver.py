"""serve-logs under attack, over real sockets: symlinks inside the tree that point at private or hidden
parts of it (the rules hold for the resolved path), and hundreds of slow or idle clients (slowloris) while
a normal client still gets its file."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harvester_cli.site.logserver import LogServer
from tests.support.harness import wait_until

pytestmark = [pytest.mark.logs, pytest.mark.faults]

SECRETS = (b"internal command log", b"alert state", b"hidden pilot", b"outside the tree")


@pytest.fixture
def tree(tmp_path) -> Path:
    return _make_tree(tmp_path)


def _make_tree(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    worker = root / "workers" / "2026-01-01" / "Q" / "7"
    worker.mkdir(parents=True)
    (worker / "pilot.out").write_text("pilot says hello\n")
    (root / "commands").mkdir()
    (root / "commands" / "submit.log").write_text("internal command log\n")
    (root / ".state").mkdir()
    (root / ".state" / "alerts.json").write_text("alert state\n")
    (root / "workers" / ".hidden.out").write_text("hidden pilot\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside the tree\n")
    links = root / "workers"
    (links / "to-commands").symlink_to("../commands")                     # a directory link to a private part
    (links / "cmd.out").symlink_to("../commands/submit.log")               # a file link to a private file
    (links / "state-dir").symlink_to(root / ".state")                      # absolute link to a hidden directory
    (links / "alerts.log").symlink_to("../.state/alerts.json")             # a visible name for a hidden file
    (links / "shown.out").symlink_to(".hidden.out")                        # same directory, hidden target
    (links / "out-dir").symlink_to(outside)                                # out of the tree
    (links / "chain.out").symlink_to("cmd.out")                            # a link to a link to a private file
    (links / "inside.out").symlink_to("2026-01-01/Q/7/pilot.out")          # a good link: served
    (links / "day").symlink_to("2026-01-01")                               # a good directory link: served
    return root


def get(address, method: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=20)
    conn.putrequest(method, path, skip_accept_encoding=True, skip_host=bool(headers and "Host" in headers))
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.mark.parametrize("path", [
    "/logs/workers/to-commands/submit.log",
    "/logs/workers/to-commands/",
    "/logs/workers/to%2Dcommands/submit.log",
    "/logs/workers/%74o-commands/submit%2elog",
    "/logs/workers/cmd.out",
    "/logs/workers/chain.out",
    "/logs/workers/state-dir/alerts.json",
    "/logs/workers/state-dir/",
    "/logs/workers/alerts.log",
    "/logs/workers/shown.out",
    "/logs/workers/out-dir/secret.txt",
    "/logs/workers/out-dir/",
    "/logs/workers/day/../to-commands/submit.log",
    "/logs/workers/day/%2e%2e/cmd.out",
    "/logs/workers/.hidden.out",
    "/logs/workers/%2ehidden.out",
])
def test_links_to_private_hidden_or_outside_places_are_not_served(tree, path):
    with LogServer(tree, "127.0.0.1", 0, "/logs") as server:
        for method in ("GET", "HEAD"):
            status, _, body = get(server.address, method, path)
            assert status == 404, (method, path, status, body)
            assert not any(secret in body for secret in SECRETS), body


def test_good_links_inside_the_tree_are_served_and_bad_ones_not_listed(tree):
    with LogServer(tree, "127.0.0.1", 0, "/logs") as server:
        status, _, body = get(server.address, "GET", "/logs/workers/inside.out")
        assert status == 200 and body == b"pilot says hello\n"
        status, _, body = get(server.address, "GET", "/logs/workers/day/Q/7/pilot.out")
        assert status == 200 and body == b"pilot says hello\n"
        status, _, listing = get(server.address, "GET", "/logs/workers/")
        assert status == 200
        for shown in (b"inside.out", b"day/", b"2026-01-01/"):
            assert shown in listing, listing
        for hidden in (b"to-commands", b"cmd.out", b"chain.out", b"state-dir", b"alerts.log", b"shown.out",
                       b"out-dir", b".hidden"):
            assert hidden not in listing, (hidden, listing)


def slow_client(address) -> socket.socket:
    """A slowloris: connects and sends half a request head, then nothing."""
    sock = socket.create_connection(address, timeout=20)
    sock.sendall(b"GET /logs/workers/2026-01-01/Q/7/pilot.out HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return sock


def serve_logs_threads(server: LogServer) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(server.name))


def test_300_slow_clients_cost_sockets_not_threads_and_a_normal_client_gets_its_file(tree):
    """300 clients that send half a request head and stop: with room for 500 connections every one is
    held (no thread each), a normal client is answered meanwhile, and each slow client gets 408 when its
    head is not complete after header_timeout."""
    with LogServer(tree, "127.0.0.1", 0, "/logs", max_connections=500, threads=4, header_timeout=3) as server:
        slow = [slow_client(server.address) for _ in range(300)]
        try:
            wait_until(lambda: server.stats["accepted"] >= 300, what="300 slow clients accepted")
            assert server.open_connections == 300
            assert serve_logs_threads(server) <= 1 + 4   # the loop and the pool: none per slow client
            status, _, body = get(server.address, "GET", "/logs/workers/2026-01-01/Q/7/pilot.out")
            assert status == 200 and body == b"pilot says hello\n"
            answers = [s.recv(200) for s in slow]   # each is closed with 408 after header_timeout
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
            assert server.stats["header_timeout"] == 300 and server.stats["requests"] == 1
        finally:
            for s in slow:
                s.close()


def test_past_the_connection_cap_the_longest_waiting_slow_clients_are_shed(tree):
    """With room for 100 connections, 300 slow clients: the oldest are closed (503) as newer ones come,
    at most 100 are open at any time, and a normal client that arrives last still gets in and is served."""
    with LogServer(tree, "127.0.0.1", 0, "/logs", max_connections=100, threads=2, header_timeout=60) as server:
        slow = [slow_client(server.address) for _ in range(300)]
        try:
            wait_until(lambda: server.stats["accepted"] >= 300, what="300 slow clients accepted")
            assert server.open_connections <= 100
            assert server.stats["evicted"] == 200
            status, _, body = get(server.address, "GET", "/logs/workers/2026-01-01/Q/7/pilot.out")
            assert status == 200 and body == b"pilot says hello\n"
            assert server.stats["evicted"] == 201   # the normal client took the slot of the oldest waiter
            assert slow[0].recv(200).startswith(b"HTTP/1.1 503 ")   # the oldest was shed, and told why
            assert serve_logs_threads(server) <= 1 + 2
        finally:
            for s in slow:
                s.close()


def test_a_trickling_head_does_not_extend_its_deadline(tree):
    """A client that sends one byte of its head every 0.2 s never completes it: it gets 408 after
    header_timeout from its first byte, however steadily it trickles."""
    with LogServer(tree, "127.0.0.1", 0, "/logs", header_timeout=1) as server:
        sock = socket.create_connection(server.address, timeout=20)
        head = b"GET /logs/workers/2026-01-01/Q/7/pilot.out HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200
        sent = 0
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.2)
        except OSError:   # the server closed the connection while we were still sending
            pass
        answer = sock.recv(200)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert sent < len(head)
        assert server.stats["header_timeout"] == 1 and server.stats["requests"] == 0


def test_keep_alive_requests_on_one_connection_and_idle_connections_are_closed(tree):
    with LogServer(tree, "127.0.0.1", 0, "/logs", idle_timeout=1) as server:
        conn = http.client.HTTPConnection(*server.address, timeout=20)
        for _ in range(3):
            conn.request("GET", "/logs/workers/2026-01-01/Q/7/pilot.out")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"pilot says hello\n"
        assert server.stats["accepted"] == 1 and server.stats["requests"] == 3
        wait_until(lambda: server.stats["idle_closed"] == 1, what="the idle connection closed")
        conn.close()


def test_pipelined_requests_are_answered_in_order(tree):
    with LogServer(tree, "127.0.0.1", 0, "/logs") as server:
        sock = socket.create_connection(server.address, timeout=20)
        request = b"GET /logs/workers/inside.out HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request * 2 + b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        assert data.count(b"HTTP/1.1 200 OK") == 3 and data.count(b"pilot says hello") == 2
        assert data.endswith(b"Disallow: /\n")


def test_an_oversized_request_head_is_refused(tree):
    with LogServer(tree, "127.0.0.1", 0, "/logs") as server:
        sock = socket.create_connection(server.address, timeout=20)
        try:
            sock.sendall(b"GET /logs/ HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000)
        except OSError:
            pass
        answer = sock.recv(200)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 431 ")


def test_status_and_metrics_pages_get_the_same_rules(tree):
    calls = []

    def page() -> bytes:
        calls.append(1)
        return b"<!DOCTYPE html><html><body>status</body></html>"

    pages = {"/status": ("text/html; charset=utf-8", page), "/metrics": ("text/plain; version=0.0.4", lambda: b"m 1\n")}
    with LogServer(tree, "127.0.0.1", 0, "/logs", pages=pages, max_connections=20, header_timeout=2) as server:
        status, headers, body = get(server.address, "GET", "/status")
        assert status == 200 and b"status" in body
        assert "default-src 'none'" in headers["content-security-policy"]   # the page may load nothing
        status, headers, body = get(server.address, "HEAD", "/metrics")
        assert status == 200 and body == b"" and headers["content-length"] == "4"
        for method in ("POST", "PUT", "DELETE"):
            assert get(server.address, method, "/status")[0] == 405
        assert get(server.address, "GET", "/status/../commands/submit.log")[0] == 404
        slow = [slow_client(server.address) for _ in range(50)]   # more than the cap
        try:
            wait_until(lambda: server.stats["accepted"] >= 50, what="slow clients accepted")
            assert get(server.address, "GET", "/status")[0] == 200
            assert server.open_connections <= 20
        finally:
            for s in slow:
                s.close()


def test_a_failing_page_is_503_and_the_logs_are_still_served(tree):
    def broken() -> bytes:
        raise OSError("database is locked")

    with LogServer(tree, "127.0.0.1", 0, "/logs", pages={"/status": ("text/html", broken)}) as server:
        status, _, body = get(server.address, "GET", "/status")
        assert status == 503 and b"not available now" in body and b"locked" not in body
        assert get(server.address, "GET", "/logs/workers/inside.out")[0] == 200


# -- generated requests --------------------------------------------------------------------------

SEGMENTS = st.sampled_from(["..", "%2e%2e", ".%2e", "%2E%2E%2F", "commands", "submit.log", ".state", "alerts.json",
                            ".hidden.out", "%2ehidden.out", "workers", "2026-01-01", "Q", "7", "pilot.out", "to-commands",
                            "cmd.out", "out-dir", "secret.txt", "day", "", ".", "%00", "%", "%zz", "%c0%ae", "\u00e9",
                            "a" * 300, "~", "%2f", "\\", "?x=1", "#f", ";p"])
PATHS = st.builds(lambda lead, parts: lead + "/".join(parts), st.sampled_from(["/logs/", "/", "//", "/logs", "", "*",
                                                                               "http://x/logs/", "/logs/workers/"]),
                  st.lists(st.one_of(SEGMENTS, st.text(max_size=8)), max_size=8))
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get", ""]),
                    st.text(max_size=10))
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1 extra", "", "HTTP/x"])
HEADERS = st.lists(st.tuples(st.sampled_from(["Host", "Range", "Content-Length", "Transfer-Encoding", "Connection",
                                               "If-Modified-Since", "Expect", "X"]),
                             st.one_of(st.sampled_from(["bytes=0-1", "bytes=-1", "bytes=9999999999-", "-1",
                                                        "99999999999999999999", "chunked", "close", "100-continue",
                                                        "keep-alive"]), st.text(max_size=20))), max_size=4)


@pytest.fixture(scope="module")
def generated_server(tmp_path_factory):
    root = _make_tree(tmp_path_factory.mktemp("generated"))
    with LogServer(root, "127.0.0.1", 0, "/logs", header_timeout=3, idle_timeout=3) as server:
        yield server


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(METHODS, PATHS, VERSIONS, HEADERS, st.binary(max_size=40))
def test_any_request_gets_an_http_answer_and_never_a_private_byte(generated_server, method, path, version, headers,
                                                                  tail):
    """Whatever arrives (methods, encodings, traversals, bad versions and headers, binary junk), the answer
    is an HTTP status line or a closed connection within the timeouts, never a byte of a private, hidden or
    outside file, and the server goes on serving."""
    server = generated_server
    head = f"{method} {path} {version}".encode("utf-8", "surrogateescape") + b"\r\n"
    for key, value in headers:
        head += f"{key}: {value}".encode("utf-8", "surrogateescape") + b"\r\n"
    request = head + b"\r\n" + tail
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer == b"" or answer.startswith(b"HTTP/1."), answer[:200]
    assert not any(secret in answer for secret in SECRETS), (request, answer[:300])
    status, _, body = get(server.address, "GET", "/logs/workers/2026-01-01/Q/7/pilot.out")
    assert status == 200 and body == b"pilot says hello\n"


def test_a_sibling_tree_whose_name_starts_like_the_root_is_outside_it(tmp_path):
    """`logs-old/` beside `logs/` shares its prefix: a link into it is outside the tree (the separator counts)."""
    from harvester_cli.site.logserver import public_parts

    root = _make_tree(tmp_path)
    sibling = tmp_path / "logs-old"
    (sibling / "workers").mkdir(parents=True)
    (sibling / "workers" / "old.out").write_text("outside the tree: an old log\n")
    (root / "workers" / "old").symlink_to(sibling / "workers")
    (root / "workers" / "old.out").symlink_to(sibling / "workers" / "old.out")
    assert public_parts(str(root), str(sibling / "workers" / "old.out")) is None
    assert public_parts(str(root), str(sibling)) is None
    assert public_parts(str(root), str(root / "workers" / "x.out")) == ["workers", "x.out"]
    with LogServer(root, "127.0.0.1", 0, "/logs") as server:
        for path in ("/logs/workers/old/old.out", "/logs/workers/old.out", "/logs/workers/old/"):
            status, _, body = get(server.address, "GET", path)
            assert status == 404 and b"an old log" not in body, (path, status, body)
        status, _, listing = get(server.address, "GET", "/logs/workers/")
        assert status == 200 and b"old" not in listing, listing
