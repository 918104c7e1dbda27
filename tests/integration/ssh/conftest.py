"""The login-node peer: sshd on login nodes in network namespaces, the real Slurm behind them
(tests/support/login_nodes.py: LoginSite, which bench/bench_slurm_ssh.py uses too)."""

import pytest

from tests.support.login_nodes import LoginSite


@pytest.fixture(scope="session")
def login_site():
    try:
        site = LoginSite().__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield site
    site.__exit__()


@pytest.fixture
def login(login_site, harness):
    """The site, as every test leaves it: each run's connection closed, no job of ours left, every login node up
    with its own host key and reachable."""
    yield login_site
    from harvester_cli.backends import transport

    transport.close_all()
    login_site.cancel_all()
    for i in range(1, login_site.nodes + 1):
        login_site.mend(i)
        if i not in login_site.sshd:
            login_site.start_sshd(i)
