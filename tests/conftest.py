"""Fixtures every test may use: a test PKI, a PanDA simulator on loopback, and a harness that builds
configurations for it and runs the CLI (tests/support/harness.py).

Where a test goes says what it needs: tests/unit/ needs no daemon and no root (the simulator and local
worker processes are fine); tests/integration/<peer>/ needs that real peer or root. Every test collected
under tests/integration/ gets the `integration` marker here, so `pytest -m "not integration"` and
`pytest tests/unit` run the same tests.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from tests.support.harness import Harness

pytest_plugins = ["tests.support.databases"]

INTEGRATION = Path(__file__).resolve().parent / "integration"


@pytest.hookimpl(tryfirst=True)   # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _root_logger_as_it_was():
    """A test that runs the CLI in-process leaves its handlers on the root logger (the stderr handler and its
    redacting filter, which folds a traceback into the message); the next test's caplog would see records that
    filter rewrote. Each test gets the root logger as the one before it found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> certs.TestPKI:
    return certs.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sim(pki):
    with PandaSimulator(pki, finish_delay=0.0) as simulator:
        yield simulator


@pytest.fixture
def harness(tmp_path, sim, pki, request):
    h = Harness(tmp_path, sim, pki, f"test-{request.node.name[:40]}-{os.getpid()}")
    yield h
    h.kill_workers()
