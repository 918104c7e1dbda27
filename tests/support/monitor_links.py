"""What PanDA's monitor does with a job's pilotID, against serve-logs' real log server: the first `|`-field is
the pilot's stdout URL, and stderr, the batch log and the submit description are that URL with `.out` replaced
by `.err`, `.log` and `.jdl` (docs: panda-api.md). For the tests of every backend's log names."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from harvester_cli.site.logserver import LogServer, prefix_from

SUFFIXES = (".out", ".err", ".log", ".jdl")


def monitor_urls(pilot_id: str) -> dict[str, str]:
    """The four URLs the monitor shows for a pilot."""
    stdout = pilot_id.split("|", 1)[0]
    assert stdout.endswith(".out"), f"the monitor cannot derive the other logs from {stdout!r}"
    return {suffix: stdout[:-len(".out")] + suffix for suffix in SUFFIXES}


@contextlib.contextmanager
def serving(log_root: Path, log_url: str):
    """serve-logs on the log tree, under log_url's path, on a free port; yields a function that GETs a URL
    made with log_url (any host and port) from it: (HTTP status, body)."""
    server = LogServer(log_root, "127.0.0.1", 0, prefix_from(log_url)).start()
    port = server.sock.getsockname()[1]

    def get(url: str) -> tuple[int, bytes]:
        parts = urlsplit(url)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{parts.path}", timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    try:
        yield get
    finally:
        server.stop()


def answers(log_root: Path, log_url: str, urls: list[str]) -> dict[str, int]:
    """The HTTP status serve-logs gives each URL."""
    with serving(log_root, log_url) as get:
        return {url: get(url)[0] for url in urls}
