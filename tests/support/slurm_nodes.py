"""A real Slurm 22.05 cluster of several compute nodes on one machine (Debian's slurmctld, slurmd, munged), for
the tests that need more than one node: many jobs in one allocation (tests/integration/manyjobs), idle nodes
and backfill windows. Started once per session (`slurm_nodes`, about 3 s) and stopped at its end.

Each compute node is one `slurmd -N NAME` in a network namespace of its own (hsn1, hsn2, ... on the bridge
hsbr0, addresses 10.78.0.11, .12, ...), with a UTS namespace whose host name is the node's name and a mount
namespace whose /etc/hosts names every node: srun inside an allocation then tells slurmctld its node's name,
and slurmctld (in a mount namespace with the same /etc/hosts, listening on the bridge's 10.78.0.1) reaches it
there, as on a real cluster (without that, a node failure never reaches the srun of a step). The client
commands run on this host, in no namespace, through SLURM_CONF. munged is private too: its own key and
socket under the cluster's directory (AuthInfo=socket=...), so no other test's munged is touched.

All namespaces share the one file system: a test's tmp_path is the shared directory the nodes, the batch
scripts and harvester-cli all see (`shared` is one more for whoever wants it). A node dies for real with
`kill_node`: SIGKILL to every process in its network namespace (its slurmd, slurmstepds and jobs); slurmctld
notices within SlurmdTimeout (3 s) plus its ping rounds, about 10 s, and marks it DOWN (NODE_FAIL for the
jobs on it; a job submitted with --no-kill loses only that node). `start_node` brings it back (idle, as
ReturnToService=2 allows). The nodes announce 4 CPUs and 16000 MB each, whatever the machine has.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.harness import free_port

BRIDGE = "hsbr0"
CONTROLLER = "10.78.0.1"
CPUS, MEMORY_MB = 4, 16000
PARTITION = "hpc"


def _run(*args: str, check: bool = True, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def netns(i: int) -> str:
    return f"hsn{i}"


class SlurmNodes:
    """The cluster: `count` compute nodes hn1..hnN in partition `hpc`, their controller and a private munged."""

    def __init__(self, base: Path, count: int = 3):
        self.base = base
        self.count = count
        self.nodes = [f"hn{i}" for i in range(1, count + 1)]
        self.conf = base / "slurm.conf"
        self.shared = base / "shared"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))},
                    "SLURM_CONF": str(self.conf)}

    # -- start and stop -----------------------------------------------------------------------------

    def start(self) -> "SlurmNodes":
        self.teardown_network()   # what a killed earlier session left
        for sub in ("state", "log", "run", "munge", "shared", *(f"spool/{n}" for n in self.nodes)):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self._network()
        self._munge()
        self._write_conf()
        self._namespaced(f"exec slurmctld -f {self.conf} -c")
        self._wait(lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout, 30, "slurmctld answering")
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_state(node, ("idle",), 60)
        return self

    def stop(self) -> None:
        try:
            self.cancel_all()
        except Exception:   # a controller already gone: the processes go below anyway
            pass
        for pid_file in sorted((self.base / "run").glob("*.pid")):
            self._kill_pid_file(pid_file)
        self._kill_pid_file(self.base / "munge" / "munged.pid")
        self.teardown_network()

    def _network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{CONTROLLER}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for i in range(1, self.count + 1):
            _run("ip", "netns", "add", netns(i))
            _run("ip", "link", "add", f"hsv{i}", "type", "veth", "peer", "name", "eth0", "netns", netns(i))
            _run("ip", "link", "set", f"hsv{i}", "master", BRIDGE, "up")
            inside = ("ip", "netns", "exec", netns(i), "ip")
            _run(*inside, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _run(*inside, "link", "set", "eth0", "up")
            _run(*inside, "link", "set", "lo", "up")
        hosts = ["127.0.0.1 localhost", f"{CONTROLLER} {socket.gethostname().split('.')[0]}",
                 *(f"{self.address(i)} {node}" for i, node in enumerate(self.nodes, 1))]
        (self.base / "hosts").write_text("\n".join(hosts) + "\n")

    def teardown_network(self) -> None:
        for i in range(1, 9):
            if _run("ip", "netns", "pids", netns(i), check=False).returncode == 0:
                self._kill_namespace(i)
            _run("ip", "netns", "del", netns(i), check=False)
        _run("ip", "link", "del", BRIDGE, check=False)

    @staticmethod
    def address(i: int) -> str:
        return f"10.78.0.{10 + i}"

    def _munge(self) -> None:
        folder = self.base / "munge"
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        folder.chmod(0o711)   # munged wants others to reach its socket
        self._daemon("/usr/sbin/munged", "--force", f"--socket={self.socket}", f"--key-file={key}",
                     f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
                     f"--seed-file={folder / 'seed'}")
        self._wait(lambda: _run("sh", "-c", f"munge -n -S {self.socket} | unmunge -S {self.socket}",
                                check=False).returncode == 0, 10, "the private munged")

    @property
    def socket(self) -> Path:
        return self.base / "munge" / "munge.sock"

    def _write_conf(self) -> None:
        b = self.base
        nodes = "\n".join(f"NodeName={node} NodeAddr={self.address(i)} CPUs={CPUS} RealMemory={MEMORY_MB} State=UNKNOWN"
                          for i, node in enumerate(self.nodes, 1))
        self.conf.write_text(f"""\
ClusterName=manynodes
SlurmctldHost={socket.gethostname().split('.')[0]}({CONTROLLER})
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=sched_interval=1
# a dead node is DOWN about 10 s after it died (the default SlurmdTimeout is 300 s)
SlurmdTimeout=3
MessageTimeout=3
KillWait=2
OverTimeLimit=0
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={b}/log/jobcomp.txt
{nodes}
PartitionName={PARTITION} Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")
        (b / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")

    def _namespaced(self, command: str, node: str | None = None) -> None:
        """Run a daemon (it forks) in a mount namespace whose /etc/hosts names the nodes; a node's also in its
        own host name and network namespace."""
        if node is None:
            hosts = f"mount --bind {self.base / 'hosts'} /etc/hosts"
            self._daemon("unshare", "--mount", "sh", "-c", f"{hosts} && {command}")
            return
        i = self.nodes.index(node) + 1
        self._daemon("unshare", "--mount", "--uts", "sh", "-c",
                     f"mount --bind {self.base / 'hosts'} /etc/hosts && hostname {node} && "
                     f"exec nsenter --net=/var/run/netns/{netns(i)} {command}")

    def _daemon(self, *args: str) -> None:
        """Start a daemon that forks into the background; its start-up complaints go to log/start.log (a pipe
        it kept open would hold this call until the daemon ends)."""
        with open(self.base / "log" / "start.log", "a") as log:
            result = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
                                    timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode} (see {self.base / 'log' / 'start.log'})")

    # -- nodes ----------------------------------------------------------------------------------------

    def start_node(self, node: str, wait: bool = True) -> None:
        self._namespaced(f"slurmd -f {self.conf} -N {node}", node)
        if wait:
            self.wait_state(node, ("idle", "mixed", "allocated"), 60)

    def kill_node(self, node: str) -> None:
        """The node dies: every process of its network namespace, at once, with SIGKILL."""
        self._kill_namespace(self.nodes.index(node) + 1)

    def _kill_namespace(self, i: int) -> None:
        for _ in range(5):   # a process forked meanwhile is caught by the next round
            pids = [int(p) for p in _run("ip", "netns", "pids", netns(i), check=False).stdout.split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def node_state(self, node: str) -> str:
        return self.run("sinfo", "-h", "-N", "-n", node, "-o", "%T", check=False).stdout.strip()

    def wait_state(self, node: str, states: tuple[str, ...], timeout: float) -> str:
        seen = []

        def reached() -> bool:
            seen.append(self.node_state(node))
            return seen[-1].rstrip("*~#!%$@^-") in states
        self._wait(reached, timeout, f"node {node} {'/'.join(states)} (last seen {seen[-1:] or '?'})")
        return seen[-1]

    # -- commands -------------------------------------------------------------------------------------

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(*args, check=check, env=self.env, timeout=120)

    def cancel_all(self) -> None:
        """Every job still queued or running, cancelled, and their nodes free again."""
        ids = self.run("squeue", "-h", "-t", "PENDING,RUNNING,SUSPENDED", "-o", "%i", check=False).stdout.split()
        if ids:
            self.run("scancel", *ids, check=False)
            self._wait(lambda: not self.run("squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED", "-o", "%i",
                                            check=False).stdout.split(), 60, "cancelled jobs gone")

    def logs(self, lines: int = 20) -> str:
        out = []
        for path in sorted((self.base / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} (tail)\n" + "\n".join(tail))
        return "\n".join(out)

    def _kill_pid_file(self, path: Path) -> None:
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
            self._wait(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, f"process {pid} gone")
        except (ProcessLookupError, RuntimeError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        path.unlink(missing_ok=True)

    @staticmethod
    def _wait(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.fixture(scope="session")
def slurm_nodes():
    """The cluster, started once per session (root: namespaces and daemons)."""
    if os.geteuid() != 0:
        pytest.fail("the multi-node Slurm tests make network namespaces and start munged, slurmctld and slurmd: run "
                    "them as root (CI does: bash scripts/test)")
    missing = [c for c in ("slurmctld", "slurmd", "munged", "srun", "unshare", "nsenter", "ip") if not shutil.which(c)]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (`bash scripts/test` as root installs "
                    "scripts/apt-packages.txt)")
    cluster = SlurmNodes(Path(tempfile.mkdtemp(prefix="harvester-cli-slurm-nodes-")))
    started = time.monotonic()
    try:
        cluster.start()
    except Exception as exc:
        logs = cluster.logs()
        cluster.stop()
        pytest.fail(f"the multi-node Slurm cluster did not start: {exc}\n{logs}")
    print(f"\n{cluster.count}-node Slurm up in {time.monotonic() - started:.1f} s ({cluster.conf})")
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)
