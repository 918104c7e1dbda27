"""A Slurm cluster that the harvester reaches only through login nodes over SSH, for tests/integration/ssh and
bench/bench_slurm_ssh.py.

    harvester (this namespace) --hcsbr0 10.79.0.0/24--  login node 1 (hcsl1: sshd, Slurm client) --hcsbr1--  cluster
                                                          login node 2 (hcsl2: sshd, Slurm client)          (hcsc)

- The cluster is tests/support/peers/slurm.sh run inside the network namespace `hcsc`: munged, slurmctld and
  slurmd on that namespace's own loopback, its controller also on 10.79.1.2 of the cluster bridge.
- Each login node is a namespace with a leg on each bridge: Debian's sshd (`sshd -D -e -f CONFIG`, as root,
  port 22 of its own namespace) and the Slurm client, whose slurm.conf (the site's, given to the sessions
  with sshd's SetEnv) names the controller by its cluster address. This namespace has an address only on the
  harvester bridge: it reaches the login nodes, never the controller.
- The login account is `hclogin` (made here, removed at the end), with an empty home, so a session costs what
  a lean login node's does. Jobs run as hclogin; the "shared file system" is a directory it owns.
- Keys: a user key (in authorized_keys), a user CA the login nodes trust (certificates with a validity),
  host keys per login node and the known_hosts file a site would publish, all made here. One machine, one
  file system: the namespaces separate the network only, so what a test checks crossed the SSH connection
  because only the transport writes the remote directories.

Names (hcs*, 10.79.*) differ from the multihost tests' (hc*, 10.77.*) and the Slurm node tests' (hs*,
10.78.*). Everything is torn down at the end, and whatever a killed run left is removed at the start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import PEERS

HARVESTER_BRIDGE, CLUSTER_BRIDGE = "hcsbr0", "hcsbr1"
HARVESTER_SIDE = "10.79.0.1"
CLUSTER_NS, CONTROLLER = "hcsc", "10.79.1.2"
USER = "hclogin"
# The cluster's network namespace only: `ip netns exec` would also give it a sysfs of its own, without the
# cgroup file system slurmd 22.05 looks for.
IN_CLUSTER = ("nsenter", f"--net=/run/netns/{CLUSTER_NS}")
LOGIN_NODES = 2


def _run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, **kwargs)


def login_ns(i: int) -> str:
    return f"hcsl{i}"


def address(i: int) -> str:
    """Login node i's address on the harvester's bridge."""
    return f"10.79.0.{10 + i}"


class LoginSite:
    """The namespaces, the cluster, the login account, the keys and one sshd per login node."""

    def __init__(self, nodes: int = LOGIN_NODES):
        self.nodes = nodes
        self.sshd: dict[int, subprocess.Popen] = {}

    # -- set-up and tear-down ------------------------------------------------------------------------

    def __enter__(self) -> LoginSite:
        if os.geteuid() != 0:
            raise RuntimeError("the login-node tests make network namespaces, a user and start sshd: run as root")
        for tool in ("sshd", "ssh", "slurmctld", "slurmd", "munged"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                raise RuntimeError(f"{tool} is not installed: bash scripts/test as root installs "
                                   "scripts/apt-packages.txt (openssh-server, openssh-client, slurm-wlm, munge)")
        self._teardown_network()
        taken = [line for line in _run("ip", "-o", "-4", "addr", "show").stdout.splitlines() if " 10.79." in line]
        if taken:   # another bridge on our subnet would take our packets: "Connection refused" from a stranger
            raise RuntimeError(f"10.79.0.0/16 is in use on this host, the login-node tests need it: {taken[0]}")
        self.base = Path(tempfile.mkdtemp(prefix="hcli-login-", dir="/var/tmp"))
        self.base.chmod(0o755)
        try:
            self._user()
            self._network()
            self._cluster()
            self._keys()
            for i in range(1, self.nodes + 1):
                self.start_sshd(i)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for i in list(self.sshd):
            self.stop_sshd(i)
        if hasattr(self, "slurm_env"):
            self.cancel_all()
            _run(*IN_CLUSTER, "bash", str(PEERS / "slurm.sh"), "stop", env=self.slurm_env,
                 check=False, timeout=120)
        self._teardown_network()
        try:
            uid = pwd.getpwnam(USER).pw_uid
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:   # what our sshd left running as hclogin
                try:
                    if os.stat(f"/proc/{pid}").st_uid == uid:
                        os.kill(int(pid), signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            _run("userdel", USER, check=False)
        except KeyError:
            pass
        if hasattr(self, "base"):
            shutil.rmtree(self.base, ignore_errors=True)

    def _teardown_network(self) -> None:
        for ns in [login_ns(i) for i in range(1, 5)] + [CLUSTER_NS]:
            _run("ip", "netns", "del", ns, check=False)
        for link in (HARVESTER_BRIDGE, CLUSTER_BRIDGE):
            _run("ip", "link", "del", link, check=False)

    def _user(self) -> None:
        self.home = self.base / "home"
        self.shared = self.base / "shared"     # the cluster's shared file system
        for directory in (self.home, self.shared):
            directory.mkdir()
        (self.home / ".bashrc").write_text("")
        try:
            pwd.getpwnam(USER)
            _run("usermod", "-d", str(self.home), "-s", "/bin/bash", USER)
        except KeyError:
            _run("useradd", "--system", "--no-create-home", "--home-dir", str(self.home), "--shell", "/bin/bash",
                 "--user-group", USER)
        # no password, and not locked either: without PAM, sshd refuses a locked account ("!" in /etc/shadow)
        _run("usermod", "-p", "*", USER)
        for directory in (self.home, self.shared):
            shutil.chown(directory, USER, USER)

    def _network(self) -> None:
        for bridge in (HARVESTER_BRIDGE, CLUSTER_BRIDGE):
            _run("ip", "link", "add", bridge, "type", "bridge")
            _run("ip", "link", "set", bridge, "up")
        _run("ip", "addr", "add", f"{HARVESTER_SIDE}/24", "dev", HARVESTER_BRIDGE)
        legs = [(CLUSTER_NS, "hcsqc", "eth0", CLUSTER_BRIDGE, f"{CONTROLLER}/24")]
        for i in range(1, self.nodes + 1):
            legs += [(login_ns(i), f"hcsp{i}", "eth0", HARVESTER_BRIDGE, f"{address(i)}/24"),
                     (login_ns(i), f"hcsq{i}", "eth1", CLUSTER_BRIDGE, f"10.79.1.{10 + i}/24")]
        for ns in {leg[0] for leg in legs}:
            _run("ip", "netns", "add", ns)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for ns, outside, inside, bridge, cidr in legs:
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
            _run("ip", "link", "set", outside, "master", bridge, "up")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", cidr, "dev", inside)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")

    def _cluster(self) -> None:
        slurm = self.base / "slurm"
        self.slurm_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))},
                          "SLURM_BASE": str(slurm), "SLURMCTLD_PORT": "6817", "SLURMD_PORT": "6818",
                          "SLURM_CONF": str(slurm / "slurm.conf")}
        result = _run(*IN_CLUSTER, "bash", str(PEERS / "slurm.sh"), "start", env=self.slurm_env,
                      check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"Slurm did not start in namespace {CLUSTER_NS} (slurm.sh start exited "
                               f"{result.returncode}): {result.stdout}\n{result.stderr}\n{self.slurm_logs()}")
        slurm.chmod(0o755)
        for sub in ("log",):
            (slurm / sub).chmod(0o755)
        # The login nodes' slurm.conf: the same cluster, its controller by its address on the cluster bridge.
        text = (slurm / "slurm.conf").read_text()
        host = _run("hostname", "-s").stdout.strip()
        self.login_conf = self.base / "login-slurm.conf"
        self.login_conf.write_text(text.replace(f"SlurmctldHost={host}(127.0.0.1)",
                                                f"SlurmctldHost={host}({CONTROLLER})"))
        self.login_conf.chmod(0o644)

    def _keys(self) -> None:
        keys = self.base / "keys"
        keys.mkdir(mode=0o700)
        self.key = keys / "id_ed25519"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "harvester", "-f", str(self.key))
        self.user_ca = keys / "user_ca"   # the site's CA for user certificates (TrustedUserCAKeys)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "site user CA", "-f", str(self.user_ca))
        self.authorized = self.base / "authorized_keys"
        shutil.copy(f"{self.key}.pub", self.authorized)
        self.authorized.chmod(0o644)
        self.known_hosts = keys / "known_hosts"
        self.host_keys: dict[int, Path] = {}
        lines = []
        for i in range(1, self.nodes + 1):
            self.host_keys[i] = self.new_host_key(i)
            lines.append(f"{address(i)} {' '.join(Path(f'{self.host_keys[i]}.pub').read_text().split()[:2])}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def certified_key(self, directory: Path, validity: str) -> Path:
        """A key of its own (not in authorized_keys) with a certificate of the site's CA for hclogin, valid for
        `validity` (ssh-keygen -V, e.g. "-5m:+1h", or "20200101:20200102" for one long expired)."""
        key = directory / f"cert-key-{time.monotonic_ns()}"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        _run("ssh-keygen", "-q", "-s", str(self.user_ca), "-I", "harvester", "-n", USER, "-V", validity, f"{key}.pub")
        return key

    def new_host_key(self, i: int) -> Path:
        path = self.base / "keys" / f"host{i}-{time.monotonic_ns()}"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path))
        return path

    # -- the login nodes' sshd --------------------------------------------------------------------------

    def sshd_config(self, i: int) -> Path:
        path = self.base / f"sshd{i}.conf"
        path.write_text("\n".join([
            "Port 22", f"ListenAddress {address(i)}", f"HostKey {self.host_keys[i]}",
            f"PidFile {self.base}/sshd{i}.pid", f"AuthorizedKeysFile {self.authorized}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no", "UsePAM no",
            "StrictModes no", f"AllowUsers {USER}", "MaxSessions 20", "LogLevel INFO",
            f"TrustedUserCAKeys {self.user_ca}.pub",
            f"SetEnv SLURM_CONF={self.login_conf}", "Subsystem sftp internal-sftp", ""]))
        return path

    def start_sshd(self, i: int) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        log = open(self.base / f"sshd{i}.log", "a")
        process = subprocess.Popen(["ip", "netns", "exec", login_ns(i), shutil.which("sshd") or "/usr/sbin/sshd",
                                    "-D", "-e", "-f", str(self.sshd_config(i))], stdout=log, stderr=log,
                                   start_new_session=True)
        self.sshd[i] = process
        deadline = time.monotonic() + 20
        while "Server listening" not in (self.base / f"sshd{i}.log").read_text().split("--- start")[-1]:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd of login node {i} did not start:\n{self.sshd_log(i)}")
            time.sleep(0.05)

    def stop_sshd(self, i: int) -> None:
        """The login node goes down: its sshd and every session it serves."""
        process = self.sshd.pop(i, None)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        with open(self.base / f"sshd{i}.log", "a") as log:
            log.write("--- start\n")
        # the sessions sshd forked for open connections are its process group's: gone with it (killpg)

    def replace_host_key(self, i: int, key: Path | None = None) -> Path:
        """The login node comes back with another host key (reinstalled, or someone in between); returns the
        one it had."""
        old = self.host_keys[i]
        self.stop_sshd(i)
        self.host_keys[i] = key or self.new_host_key(i)
        self.start_sshd(i)
        return old

    def sshd_log(self, i: int) -> str:
        path = self.base / f"sshd{i}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def cut(self, i: int) -> None:
        """The network between the harvester and login node i goes away (its cable, on the harvester's side)."""
        _run("ip", "link", "set", f"hcsp{i}", "down")

    def mend(self, i: int) -> None:
        _run("ip", "link", "set", f"hcsp{i}", "up")

    # -- the cluster, as its administrator sees it --------------------------------------------------------

    def slurm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm command on the cluster (in its namespace), as root."""
        result = _run(*IN_CLUSTER, *args, env=self.slurm_env, check=False, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def controller_pid(self) -> int:
        return int((self.base / "slurm" / "run" / "slurmctld.pid").read_text())

    def cancel_all(self) -> None:
        ids = self.slurm("squeue", "-h", "-u", USER, "-t", "PENDING,RUNNING,SUSPENDED", "-o", "%i", check=False)
        if ids.stdout.split():
            self.slurm("scancel", "-u", USER, check=False)

    def slurm_logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.base / "slurm" / "log" / name
            if path.exists():
                out.append(f"--- {name} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    # -- what a queue's configuration says --------------------------------------------------------------

    def work_dir(self, name: str) -> Path:
        """A directory of the cluster's shared file system for one test, owned by the login account."""
        path = self.shared / name
        path.mkdir()
        shutil.chown(path, USER, USER)
        return path

    def backend_options(self, work_dir: Path, nodes: tuple[int, ...] = (1,), **extra) -> dict:
        return {"login_nodes": [address(i) for i in nodes], "ssh_user": USER, "ssh_key": str(self.key),
                "known_hosts": str(self.known_hosts), "work_dir": str(work_dir), "connect_timeout": 3,
                "command_timeout": 20, **extra}

