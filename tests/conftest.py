"""Fixtures every test may use: a test PKI, a PanDA simulator on loopback, and a harness that builds
configurations for it and runs the CLI (tests/support/harness.py)."""

from __future__ import annotations

import os

import pytest

from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from tests.support.harness import Harness

pytest_plugins = ["tests.support.databases"]


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
