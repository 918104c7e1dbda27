"""A PostgreSQL primary and a synchronous streaming standby of our own, for the `failover` tests: two data
directories under /var/tmp, two loopback ports, the servers run as the postgres user. The standby is made
with `pg_basebackup -R` and named in the primary's `synchronous_standby_names` with `synchronous_commit =
on`: a COMMIT returns only once the standby has the transaction. `promote()` is `pg_ctl promote`; `fence()`
stops the old primary (what a site's failover manager does before or right after it promotes), and
`restart_read_only()` brings it back refusing writes. The project's main cluster (port 5432) is not
touched. Also a private MariaDB server (on loopback, its own port), to stop and start under a command.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# Ports nothing else here uses (the multihost tests' private servers listen on 55432 and 53306).
PRIMARY_PORT, STANDBY_PORT, MARIA_PORT = 55441, 55442, 53316
USER, PASSWORD, DATABASE = "harvester", "failover-secret", "harvester"


def _run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def _as_postgres(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return _run("runuser", "-u", "postgres", "--", *args, check=check, timeout=timeout)


def _private_dir(name: str, owner: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=f"hcli-{name}-", dir="/var/tmp"))
    base.chmod(0o755)
    shutil.chown(base, owner, owner)
    return base


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


class Server:
    """One PostgreSQL server of the pair: its data directory and port."""

    def __init__(self, bin_dir: Path, data: Path, port: int, listen: str = "127.0.0.1"):
        self.bin, self.data, self.port, self.listen = bin_dir, data, port, listen

    @property
    def address(self) -> str:
        """host:port as the harvester hosts reach it."""
        return f"{self.listen}:{self.port}"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), *args, check=check)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.data.parent / f"{self.data.name}.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "-t", "60", "stop", check=False)

    def running(self) -> bool:
        return self.pg_ctl("status", check=False).returncode == 0

    def sql(self, statement: str, database: str = "postgres", check: bool = True) -> str:
        return _as_postgres(str(self.bin / "psql"), "-h", str(self.data.parent), "-p", str(self.port), "-U", "postgres",
                            "-d", database, "-XAtqc", statement, check=check).stdout.strip()

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def log(self) -> str:
        path = self.data.parent / f"{self.data.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class StandbyPair:
    """A primary and its synchronous standby, started on enter, removed on exit. `listen`: the address the
    harvester hosts reach them on besides loopback (the multihost bridge's, for hosts in namespaces)."""

    def __init__(self, primary_port: int = PRIMARY_PORT, standby_port: int = STANDBY_PORT, listen: str = "127.0.0.1"):
        self.listen = listen
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")) if Path("/usr/lib/postgresql").exists() \
            else []
        if not versions:
            raise RuntimeError("PostgreSQL is not installed: run scripts/test as root (scripts/apt-packages.txt)")
        self.bin = versions[-1].parent
        self.ports = (primary_port, standby_port)

    def __enter__(self) -> StandbyPair:
        self.dir = _private_dir("failover", "postgres")
        self.primary = Server(self.bin, self.dir / "primary", self.ports[0], self.listen)
        self.standby = Server(self.bin, self.dir / "standby", self.ports[1], self.listen)
        try:
            self._make()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _make(self) -> None:
        _as_postgres(str(self.bin / "initdb"), "-D", str(self.primary.data), "-U", "postgres", "-A", "trust",
                     "--no-sync")
        with open(self.primary.data / "postgresql.conf", "a") as conf:
            conf.write(f"""
listen_addresses = '{",".join(dict.fromkeys(["127.0.0.1", self.listen]))}'
port = {self.primary.port}
unix_socket_directories = '{self.dir}'
wal_level = replica
max_wal_senders = 5
hot_standby = on
synchronous_commit = on
wal_keep_size = '64MB'
fsync = off
full_page_writes = on
max_connections = 100
shared_buffers = 32MB
""")
        (self.primary.data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            "host replication postgres 127.0.0.1/32 trust\n"
            f"host all {USER} 127.0.0.1/32 scram-sha-256\n"
            f"host all {USER} {self.listen}/24 scram-sha-256\n")
        self.primary.start()
        self.primary.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        self.primary.sql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        _as_postgres(str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                     "-D", str(self.standby.data), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast")
        with open(self.standby.data / "postgresql.auto.conf", "a") as conf:   # after what -R wrote: it wins
            conf.write(f"port = {self.standby.port}\n"
                       f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} user=postgres "
                       "application_name=standby1'\n")
        self.standby.start()
        # Synchronous from now on (before, every COMMIT would wait for a standby that does not exist yet).
        self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        self.primary.sql("SELECT pg_reload_conf()")
        wait_for(lambda: self.primary.sql("SELECT sync_state FROM pg_stat_replication "
                                          "WHERE application_name = 'standby1'") == "sync",
                 60, "the standby streaming synchronously")

    # -- what the tests do to it -------------------------------------------------------------------

    def url(self, *, password: bool = True) -> str:
        """The state URL as an operator writes it: both hosts, the one that takes writes wanted."""
        secret = f":{PASSWORD}" if password else ""
        return (f"postgresql://{USER}{secret}@{self.primary.address},{self.standby.address}/{DATABASE}"
                "?target_session_attrs=read-write")

    def fail_over(self, mode: str = "fast") -> None:
        """The primary goes away, the standby is promoted: what a failover manager (Patroni, repmgr, a
        site's own script) does when the primary dies. The old primary stays down (fenced)."""
        self.primary.stop(mode)
        self.promote()

    def promote(self) -> None:
        self.standby.pg_ctl("-w", "-t", "60", "promote")
        wait_for(lambda: not self.standby.in_recovery(), 60, "the standby promoted")

    def restart_read_only(self) -> None:
        """The old primary back, fenced the other way: it refuses writes (default_transaction_read_only)."""
        with open(self.primary.data / "postgresql.auto.conf", "a") as conf:
            conf.write("default_transaction_read_only = on\n")
        self.primary.start()

    def __exit__(self, *exc) -> None:
        for server in (getattr(self, "standby", None), getattr(self, "primary", None)):
            if server is not None and server.data.exists():
                server.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMariaDB:
    """A MariaDB server of its own on loopback (the shared one on 3306 is not touched), to stop and start."""

    USER = PASSWORD = "hcli"

    def __init__(self, port: int = MARIA_PORT):
        self.port = port
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> PrivateMariaDB:
        if not shutil.which("mariadbd"):
            raise RuntimeError("MariaDB is not installed: run scripts/test as root (scripts/apt-packages.txt)")
        self.dir = _private_dir("maria-failover", "mysql")
        self.socket = self.dir / "mysqld.sock"
        _run("mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={self.dir / 'data'}",
             "--auth-root-authentication-method=normal", "--skip-test-db")
        self.start()
        assert self.sql(f"CREATE USER '{self.USER}'@'127.0.0.1' IDENTIFIED BY '{self.PASSWORD}'; "
                        f"GRANT ALL ON *.* TO '{self.USER}'@'127.0.0.1'").returncode == 0
        return self

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={self.dir / 'data'}", "--bind-address=127.0.0.1",
             f"--port={self.port}", f"--socket={self.socket}", f"--pid-file={self.dir / 'mysqld.pid'}",
             f"--log-error={self.dir / 'error.log'}", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
             "--innodb-flush-log-at-trx-commit=1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self.sql("SELECT 1").returncode == 0 or self.process.poll() is not None, 60, "mariadbd")
        if self.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited: {(self.dir / 'error.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def sql(self, statement: str) -> subprocess.CompletedProcess:
        return _run("mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", statement, check=False)

    def database(self, name: str) -> str:
        assert self.sql(f"CREATE DATABASE {name}").returncode == 0
        return f"mariadb://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{name}"

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CommitCutter:
    """A TCP proxy on loopback in front of a PostgreSQL server that can cut a COMMIT off, the way a failover
    does: armed, the next COMMIT a client sends either reaches the server and its answer is withheld (`keep`:
    the transaction is kept, and with synchronous replication on the standby too) or never reaches it (the
    server sees the client go and rolls back). The client then waits without an answer until `release()`
    closes its connection: what a COMMIT cut off by a server that went away looks like from the client."""

    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"   # the simple-protocol query psycopg sends for commit()

    def __init__(self, upstream_port: int):
        import socket
        import threading

        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: bool | None = None          # None: pass everything; True/False: cut the next COMMIT (keep?)
        self.cut = threading.Event()            # a COMMIT has been cut off: its client waits
        self.kept: bool | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arm(self, keep: bool) -> None:
        with self._lock:
            self.armed, self.kept = keep, None
            self.cut.clear()
            self._release.clear()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._closing = True
        self._release.set()
        self.listener.close()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                server.settimeout(None)
            except OSError:   # the server is down: the client tries its next host
                client.close()
                continue
            threading.Thread(target=self._pump_up, args=(client, server), daemon=True).start()

    def _pump_up(self, client, server) -> None:
        """client -> server, watching for the COMMIT to cut; starts the answering direction."""
        import threading

        withheld = threading.Event()   # the server's answers are no longer passed on
        threading.Thread(target=self._pump_down, args=(server, client, withheld), daemon=True).start()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                at = data.find(self.COMMIT)
                with self._lock:
                    cutting = at >= 0 and self.armed is not None
                    keep = self.armed
                    if cutting:
                        self.armed = None
                if not cutting:
                    server.sendall(data)
                    continue
                if keep:
                    withheld.set()
                    server.sendall(data)          # the server commits; its answer stops here
                else:
                    server.sendall(data[:at])     # the COMMIT never arrives
                    server.close()
                    self.kept = False
                    self.cut.set()
                self._release.wait()
                break
        except OSError:
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass

    def _pump_down(self, server, client, withheld) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if withheld.is_set():
                    if b"COMMIT\x00" in data:   # CommandComplete: the server kept it
                        self.kept = True
                        self.cut.set()
                    continue
                client.sendall(data)
        except OSError:
            pass


def wait_stopped(pid: int, timeout: float = 60) -> None:
    """Until the process stopped itself (HARVESTER_CLI_STOP_AT): state T in /proc/PID/stat."""
    def stopped() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        except (OSError, IndexError):
            raise AssertionError(f"process {pid} ended before its fault point") from None
    wait_for(stopped, timeout, f"process {pid} stopped at its fault point")
