"""Several harvester hosts on one machine, for the `multihost` tests and bench/bench_multihost.py.

Each host is a network namespace joined to a bridge by a veth pair: its own address (10.77.0.1N), its own
[instance] host, work and log directories, its own loop of `cycle` and step commands. One host is cut off
with `ip link set hcvN down` (its side of the wire) and killed with SIGKILL to its process group. The
servers every host reaches listen on the bridge's address (10.77.0.1) only: a private PostgreSQL and a
private MariaDB started here (their data under /var/tmp, where their own users can reach it), and the
PanDA simulator. Everything is torn down afterwards; nothing leaves this machine.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT  # the checkout under test (hosts import it from here)

BRIDGE = "hcbr0"
SERVER = "10.77.0.1"
PG_PORT, MARIA_PORT = 55432, 53306


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def netns(i: int) -> str:
    return f"hch{i}"


def veth(i: int) -> str:
    return f"hcv{i}"


class Network:
    """The bridge and `count` host namespaces. Another `prefix` and `subnet` make a second set of its own
    beside the first (the chaos bench runs beside the tests so)."""

    def __init__(self, count: int, prefix: str = "hc", subnet: str = "10.77.0"):
        self.count, self.prefix, self.subnet = count, prefix, subnet
        self.bridge = BRIDGE if prefix == "hc" else f"{prefix}br0"
        self.server = f"{subnet}.1"

    def netns(self, i: int) -> str:
        return f"{self.prefix}h{i}"

    def veth(self, i: int) -> str:
        return f"{self.prefix}v{i}"

    def __enter__(self) -> "Network":
        self.teardown()   # what a killed earlier run left behind
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.server}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            _run("ip", "netns", "add", self.netns(i))
            _run("ip", "link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", self.netns(i))
            _run("ip", "link", "set", self.veth(i), "master", self.bridge, "up")
            inside = ("ip", "netns", "exec", self.netns(i), "ip")
            _run(*inside, "addr", "add", f"{self.subnet}.{10 + i}/24", "dev", "eth0")
            _run(*inside, "link", "set", "eth0", "up")
            _run(*inside, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def teardown(self) -> None:
        for i in range(1, 9):
            _run("ip", "netns", "del", self.netns(i), check=False)
        _run("ip", "link", "del", self.bridge, check=False)

    def cut(self, i: int) -> None:
        _run("ip", "link", "set", self.veth(i), "down")

    def mend(self, i: int) -> None:
        _run("ip", "link", "set", self.veth(i), "up")


def _private_dir(name: str, owner: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=f"hcli-{name}-", dir="/var/tmp"))
    base.chmod(0o755)
    shutil.chown(base, owner, owner)
    return base


def _wait(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            raise RuntimeError(f"{what} did not start within {timeout} s")
        time.sleep(0.2)


class PrivatePostgres:
    """A PostgreSQL server of its own, listening on the bridge's address. `durable`: a COMMIT is in the WAL
    before it is answered (synchronous_commit on), so a crash of the server (an immediate shutdown) loses no
    answered COMMIT; fsync stays off (this machine does not crash)."""

    def __init__(self, port: int = PG_PORT, durable: bool = False, listen: str = SERVER):
        self.port, self.durable, self.listen = port, durable, listen

    def __enter__(self) -> "PrivatePostgres":
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not versions:
            raise RuntimeError("PostgreSQL is not installed: run scripts/test as root (scripts/apt-packages.txt)")
        self.bin = versions[-1].parent
        self.dir = _private_dir("pg", "postgres")
        _run("runuser", "-u", "postgres", "--", str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
             "-U", "postgres", "--no-sync")
        with open(self.dir / "data" / "pg_hba.conf", "a") as f:
            f.write(f"host all all {self.listen.rpartition('.')[0]}.0/24 trust\n")
        self.start()
        return self

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(self.bin / "postgres"), "-D", str(self.dir / "data"),
             "-c", f"listen_addresses={self.listen}", "-p", str(self.port), "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off", "-c", f"synchronous_commit={'on' if self.durable else 'off'}",
             "-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: self._psql("SELECT 1").returncode == 0, 60, "postgres", self.process)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m fast (open transactions rolled back, clients told) or immediate (a crash: no one is
        told, recovery from the WAL at the next start)."""
        _run("runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode,
             "-w", "-t", "60", "stop", check=False)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _psql(self, sql: str) -> subprocess.CompletedProcess:
        return _run("runuser", "-u", "postgres", "--", str(self.bin / "psql"), "-h", str(self.dir), "-p",
                    str(self.port), "-qc", sql, check=False)

    def database(self) -> str:
        name = f"hcli_{uuid.uuid4().hex[:10]}"
        assert self._psql(f"CREATE DATABASE {name}").returncode == 0
        return f"postgresql+psycopg://postgres@{self.listen}:{self.port}/{name}"

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMariaDB:
    """A MariaDB server of its own, listening on the bridge's address. `durable`: InnoDB hands its log to the
    kernel at every COMMIT (innodb_flush_log_at_trx_commit=2), so a killed server loses no answered COMMIT."""

    USER = PASSWORD = "hcli"

    def __init__(self, port: int = MARIA_PORT, durable: bool = False, listen: str = SERVER):
        self.port, self.durable, self.listen = port, durable, listen

    def __enter__(self) -> "PrivateMariaDB":
        self.dir = _private_dir("maria", "mysql")
        self.socket = self.dir / "mysqld.sock"
        _run("mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={self.dir / 'data'}",
             "--auth-root-authentication-method=normal", "--skip-test-db")
        self.start()
        assert self._sql(f"CREATE USER '{self.USER}'@'%' IDENTIFIED BY '{self.PASSWORD}'; "
                         f"GRANT ALL ON *.* TO '{self.USER}'@'%'").returncode == 0
        return self

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={self.dir / 'data'}",
             f"--bind-address={self.listen}", f"--port={self.port}", f"--socket={self.socket}",
             f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self.dir / 'error.log'}", "--skip-name-resolve",
             f"--innodb-flush-log-at-trx-commit={2 if self.durable else 0}", "--innodb-buffer-pool-size=64M",
             "--max-connections=300", "--innodb-doublewrite=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: self._sql("SELECT 1").returncode == 0, 60, "mariadbd", self.process)

    def stop(self, mode: str = "fast") -> None:
        """fast: SIGTERM, the server's own shutdown (open transactions rolled back); immediate: SIGKILL, a
        crash (InnoDB recovers at the next start)."""
        if self.process.poll() is None:
            if mode == "immediate":
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def _sql(self, statement: str) -> subprocess.CompletedProcess:
        return _run("mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", statement, check=False)

    def database(self) -> str:
        name = f"hcli_{uuid.uuid4().hex[:10]}"
        assert self._sql(f"CREATE DATABASE {name}").returncode == 0
        return f"mysql+pymysql://{self.USER}:{self.PASSWORD}@{self.listen}:{self.port}/{name}"

    def __exit__(self, *exc) -> None:
        self.stop("fast")
        # A server a restart fault started last may outlive self.process (a bench run left one listening):
        # whatever runs on this data directory goes too.
        subprocess.run(["pkill", "-KILL", "-f", "--", f"--datadir={self.dir / 'data'}"], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def toml(data: dict, prefix: str = "") -> str:
    """Just enough TOML for a host's configuration."""
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in plain.items())
    for key, value in tables.items():
        name = f"{prefix}.{key}" if prefix else key
        if any(not isinstance(v, dict) for v in value.values()) or not value:
            text += f"\n[{name}]\n"
        text += toml(value, name)
    return text


@dataclass
class Host:
    """One harvester host: a namespace, a configuration, a loop of commands (a process group)."""

    index: int
    directory: Path
    config: Path
    loop: subprocess.Popen | None = None
    kills: int = 0
    ns: str = ""   # its network namespace (default: netns(index))

    @property
    def namespace(self) -> str:
        return self.ns or netns(self.index)

    @property
    def name(self) -> str:
        return f"h{self.index}"

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(self.directory / "xdg-state"),
                "XDG_CONFIG_HOME": str(self.directory / "xdg-config")}

    def command(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """One harvester-cli command on this host (in its namespace)."""
        return subprocess.run(["ip", "netns", "exec", self.namespace, sys.executable, "-m", "harvester_cli",
                               "--config", str(self.config), *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout)

    def start(self, steps: str = "cycle", seed: int = 0, pause: float = 0.3) -> None:
        """Its cron: `cycle` again and again, and (steps="mixed") poll and propagate at their own rhythm."""
        self.loop = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, str(Path(__file__).with_name("multihost_loop.py")),
             str(self.config), str(self.directory / "runs.jsonl"), steps, str(seed), str(pause)],
            env=self.env(), stdout=subprocess.DEVNULL, stderr=open(self.directory / "loop.err", "a"),
            start_new_session=True)

    def kill(self) -> None:
        """kill -9 of the host's loop and the command it runs (its workers live on, as pilots do)."""
        if self.loop is not None and self.loop.poll() is None:
            os.killpg(self.loop.pid, signal.SIGKILL)
            self.loop.wait()
            self.kills += 1
        self.loop = None

    def stop(self) -> None:
        """Let the current command finish, then stop."""
        if self.loop is not None and self.loop.poll() is None:
            os.kill(self.loop.pid, signal.SIGTERM)   # the loop alone: its running command finishes
            try:
                self.loop.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.kill()
        self.loop = None

    def runs(self) -> list[dict]:
        path = self.directory / "runs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Site:
    """N hosts sharing one state database, their queues and the simulator."""

    root: Path
    state: str
    panda: dict
    queues: dict
    hosts: list[Host] = field(default_factory=list)
    harvester_id: str = "multihost"
    extra: dict = field(default_factory=dict)
    network: Network | None = None   # another set of namespaces than the default one

    def add_hosts(self, count: int) -> list[Host]:
        for i in range(1, count + 1):
            directory = self.root / f"h{i}"
            directory.mkdir(parents=True, exist_ok=True)
            data = {
                "harvester_id": self.harvester_id, "state": self.state,
                "log_dir": str(directory / "logs"), "work_dir": str(directory / "work"),
                "log_url": f"http://{self.network.subnet if self.network else '10.77.0'}.{10 + i}:8080/logs",
                **self.extra,
                "instance": {"host": f"h{i}", **self.extra.get("instance", {})},
                "panda": self.panda,
                "queues": self.queues,
            }
            config = directory / "config.toml"
            config.write_text(toml(data))
            self.hosts.append(Host(i, directory, config, ns=self.network.netns(i) if self.network else ""))
        return self.hosts

    def upgrade_at_once(self) -> list[dict]:
        """`db upgrade` on every host at the same moment; their JSON answers."""
        processes = [subprocess.Popen(["ip", "netns", "exec", h.namespace, sys.executable, "-m", "harvester_cli",
                                       "--config", str(h.config), "--json", "db", "upgrade"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=h.env())
                     for h in self.hosts]
        answers = []
        for p in processes:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
            answers.append(json.loads(out))
        return answers

    def start(self, steps: str = "mixed", pause: float = 0.3) -> None:
        for host in self.hosts:
            host.start(steps, seed=random.randrange(1 << 30), pause=pause)

    def stop(self) -> None:
        for host in self.hosts:
            if host.loop is not None and host.loop.poll() is None:
                os.kill(host.loop.pid, signal.SIGTERM)
        for host in self.hosts:
            host.stop()


def pilot_template(starts: Path, then: str) -> str:
    """A pilot that first notes its worker id and the namespace (host) it runs in: a worker started twice,
    or by another host than the one that recorded it, shows there."""
    return f"/bin/sh -c 'echo {{worker_id}} $(ip netns identify $$) >> {starts}; exec {then}'"


def starts(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        worker, _, host = line.partition(" ")
        out.append((int(worker), host.strip()))
    return out
