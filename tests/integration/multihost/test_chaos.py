"""The chaos run's short version (bench/chaos.py; the long one is `python -m bench chaos --minutes 30`): two
hosts run the cron chain against a private PostgreSQL and a private MariaDB (durable: an answered COMMIT
survives a crash of the server) and the PanDA simulator, while faults drawn from a fixed seed overlap:
kill -9 of a command, PanDA fault modes, the server stopped fast or immediately mid-transaction, one host's
database traffic dropped by nft, the log volume full, a clock step under libfaketime for one command.

Every kind of fault comes at least once in each run (the seed's first draws are one of each). What must
hold, from the simulator's records: every job the hosts stored final once at PanDA, no worker started
twice or by another host, no update lost or conflicting; and after every fault a consistent state within
the bound (bench/chaos.py says what consistent means). The run waits on conditions: a slow machine makes
it longer, not red, up to the bound.
"""

from __future__ import annotations

import pytest

from bench import chaos
from harvester_cli.panda.sim import certs
from harvester_cli.panda.sim.server import PandaSimulator
from tests.support import multihost

pytestmark = [pytest.mark.multihost, pytest.mark.chaos]

HOSTS = 2
# Namespaces and a bridge of its own (not the bench's hk*, not the multihost tests' hc*): it runs beside both.
PREFIX, SUBNET = "hq", "10.80.0"
SECONDS = 20      # of faults (the last ends by 25 s); then the hosts run until everything is final
MEAN_GAP = 3.0    # seconds between two faults' starts, on average: every kind within the first ~20 s


@pytest.fixture(scope="module")
def network():
    with multihost.Network(HOSTS, prefix=PREFIX, subnet=SUBNET) as net:
        yield net


@pytest.fixture(scope="module")
def servers(network):
    with multihost.PrivatePostgres(chaos.PG_PORT, durable=True, listen=network.server) as pg, \
            multihost.PrivateMariaDB(chaos.MARIA_PORT, durable=True, listen=network.server) as maria:
        yield {"postgresql": pg, "mariadb": maria}


@pytest.fixture(scope="module")
def pki(tmp_path_factory, network):
    return certs.create(tmp_path_factory.mktemp("pki-chaos"), addresses=(network.server,))


@pytest.mark.parametrize("database,seed", [("postgresql", 7), ("mariadb", 8)])
def test_overlapping_faults_lose_nothing_double_nothing_and_recover_within_the_bound(
        tmp_path, network, servers, pki, database, seed):
    tmp_path.chmod(0o755)   # the servers' users and the hosts' pilots reach into it
    said: list[str] = []
    with PandaSimulator(pki, host=network.server, finish_delay=0.0) as sim:
        run = chaos.Run(tmp_path, database, servers[database], network, sim, seed, SECONDS, HOSTS,
                        say=lambda line: (said.append(line), print(line)), mean_gap=MEAN_GAP)
        run.execute()
    print(run.table())
    assert {f.kind for f in run.faults} == set(chaos.KINDS)
    assert not run.problems, "\n".join(run.problems)
    # Each fault was printed with the seed that replays it, and recovered within the bound.
    for fault in run.faults:
        assert any(f"{fault.label()} for" in line and f"--seed {seed}" in line for line in said), fault
        assert fault.recovered is not None and fault.recovered - fault.quiet <= chaos.BOUND
    # The faults did something: a command was killed; and the work went on. (A full log volume fails the
    # jobs whose pilots cannot write their output there, often half of a run this short.)
    assert any(f.note.startswith("killed") for f in run.faults if f.kind == "kill")
    assert run.counts["finished"] >= 3, run.counts
