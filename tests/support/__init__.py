"""What the tests share, in one place: test modules import helpers from here and never from each other.

    harness.py      configurations for the PanDA simulator, the CLI run against them, waiting for a goal
                    (`wait_until`, `cycle_until`), reading the state database (`rows`), a free port
    credentials.py  a grid CA, a site with proxy and token profiles, a token endpoint and a token issuer
    mail.py         an SMTP server on loopback (aiosmtpd) that keeps what it receives (`smtp`)
    databases.py    real PostgreSQL and MariaDB servers (a plugin of the root conftest: `pg_url`, `maria_url`)
    arc_ce.py       a real A-REX started by peers/arc-ce.sh and the pilot zip its jobs run
    condor_pool.py  the real HTCondor pool started by peers/htcondor-pool.sh
    monitoring.py   the scenario the Prometheus and Chromium tests read, and serve-logs serving it
    multihost.py    several hosts in network namespaces on one private PostgreSQL / MariaDB
    login_nodes.py  a Slurm cluster reached only through login nodes (sshd in network namespaces), its keys
    slurm_nodes.py  a real Slurm cluster of several compute nodes (one slurmd per network namespace)
    migrations.py   a state database of schema version 2 and what an upgrade must keep
    layout.py       a plugin for tests/unit/test_layout.py (each test's markers and fixtures' modules)
    peers/          start scripts of the real peers, a grid CA and a token issuer of our own
    data/           files the tests read (a state database of schema version 2)

A peer's fixtures are imported by the conftest.py of the directories whose tests need it
(tests/integration/<peer>/), so a test under tests/unit cannot ask for one by accident; the database
servers' fixtures are the exception (a plugin of the root conftest, so each server starts once).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the checkout under test
PEERS = Path(__file__).resolve().parent / "peers"
DATA = Path(__file__).resolve().parent / "data"
