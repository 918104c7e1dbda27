"""The soak's HTCondor pool: the minicondor chroot the tests use (tests/support/peers/htcondor-pool.sh builds
it), started with a configuration of its own, so that the soak neither disturbs nor inherits the test pool:
its own collector port, its own LOCAL_DIR (job queue, history, logs, spool, execute directories: wiped when it
starts and when it stops) and its own schedd name. The daemons run from `condor_master -f` in the chroot with
CONDOR_CONFIG pointing at the soak's file: the chroot's whole configuration, then a directory of the soak's own
added to LOCAL_CONFIG_DIR (HTCondor reads those directories after the main file, in order, so the soak's
settings come after the test pool's config.d/99-local-test).

Knobs that matter at this scale, with what the soak sets (HTCondor's defaults in brackets):
    MAX_JOBS_PER_OWNER        1,000,000  [100,000: a 100k-worker harvester hits it exactly]
    MAX_JOBS_PER_SUBMISSION   20,000     [20,000: one Schedd.submit call; harvester-cli sends max_at_once=100]
    MAX_JOBS_SUBMITTED        2,000,000  [no limit]
    MAX_JOBS_RUNNING          slots x 2  [memory based]
    NUM_CPUS                  the cores short pilots run in (one partitionable slot, a core per pilot)
    SCHEDD_INTERVAL 60, NEGOTIATOR_INTERVAL 20: a site's rhythm rather than the test pool's 2 s and 1 s.
    MAX_HISTORY_LOG 20 MB x MAX_HISTORY_ROTATIONS 2, MAX_*_LOG 10 MB: the pool's files stay bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL_SCRIPT = ROOT / "tests" / "support" / "peers" / "htcondor-pool.sh"
CHROOT = Path(os.environ.get("CONDOR_CHROOT", "/tmp/minicondor-sid"))
JOBDIR = Path("/tmp/htc-jobs")   # bind-mounted at the same path in the chroot (the job files live there)
USER, UID = "ctest", 2000
PORT = 9628                      # the test pool uses 9618
LOCAL_DIR = "/var/lib/harvester-soak"   # inside the chroot
CONFIG = "/etc/condor/harvester-soak.config"
OVERRIDES = "/etc/condor/harvester-soak.d"   # read last: after the chroot's config.d (the test pool's settings)
SCHEDD = f"soak@{socket.gethostname().split('.')[0]}"
COLLECTOR = f"127.0.0.1:{PORT}"

SETTINGS = {
    "MAX_JOBS_PER_OWNER": 1_000_000,
    "MAX_JOBS_PER_SUBMISSION": 20_000,
    "MAX_JOBS_SUBMITTED": 2_000_000,
    "SCHEDD_INTERVAL": 60,
    "NEGOTIATOR_INTERVAL": 20,
    "NEGOTIATOR_CYCLE_DELAY": 5,
    "UPDATE_INTERVAL": 30,
    "STARTER_UPDATE_INTERVAL": 30,
    "SHADOW_QUEUE_UPDATE_INTERVAL": 60,
    "MAX_HISTORY_LOG": 20_000_000,
    "MAX_HISTORY_ROTATIONS": 2,
    "MAX_DEFAULT_LOG": 10_000_000,
    "MAX_SCHEDD_LOG": 10_000_000,
    "MAX_SHADOW_LOG": 10_000_000,
    "MAX_STARTER_LOG": 10_000_000,
}


class Pool:
    """Start with `with Pool(slots) as pool:`; `client_config` is the CONDOR_CONFIG harvester-cli runs with."""

    def __init__(self, work: Path, slots: int):
        self.work = work
        self.slots = slots
        self.client_config = work / "condor_client.config"
        self.master: subprocess.Popen | None = None
        self.mounted: list[Path] = []
        self.keep_logs = False   # copy the daemons' logs into `work` when stopping

    # -- the chroot --------------------------------------------------------------------------

    def _ensure_chroot(self) -> None:
        """Build the chroot with the tests' script if it is missing (start then stop the test pool once)."""
        if (CHROOT / "usr/sbin/condor_master").exists():
            return
        env = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG" and not k.startswith("_CONDOR_")}
        for action in ("start", "stop"):
            result = subprocess.run(["bash", str(POOL_SCRIPT), action], capture_output=True, text=True, env=env,
                                    timeout=1200)
            if result.returncode != 0:
                raise SystemExit(f"soak: building the minicondor chroot failed ({POOL_SCRIPT} {action}):\n"
                                 f"{result.stdout}\n{result.stderr}")

    def _mount(self) -> None:
        JOBDIR.mkdir(exist_ok=True)
        JOBDIR.chmod(0o1777)
        for source, target, how in ((None, CHROOT / "proc", ["-t", "proc", "proc"]),
                                    (Path("/dev"), CHROOT / "dev", ["--bind"]),
                                    (Path("/dev/pts"), CHROOT / "dev/pts", ["--bind"]),
                                    (JOBDIR, CHROOT / str(JOBDIR).lstrip("/"), ["--bind"])):
            target.mkdir(parents=True, exist_ok=True)
            if subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
                continue
            subprocess.run(["mount", *how, *([str(source)] if source else []), str(target)], check=True)
            self.mounted.append(target)

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        (CHROOT / CONFIG.lstrip("/")).write_text(
            "# harvester-cli soak (bench/soak_pool.py): the chroot's configuration, then the soak's own\n"
            "include : /etc/condor/condor_config\n"
            f"LOCAL_CONFIG_DIR = /usr/share/condor/config.d,/etc/condor/config.d,{OVERRIDES}\n")
        lines = [
            "# harvester-cli soak (bench/soak_pool.py): read after the chroot's config.d",
            f"LOCAL_DIR = {LOCAL_DIR}",
            "CONDOR_HOST = 127.0.0.1",
            f"COLLECTOR_HOST = {COLLECTOR}",
            f"COLLECTOR_PORT = {PORT}",
            f"SHARED_PORT_PORT = {PORT}",
            f"SCHEDD_NAME = {SCHEDD}",
            f"NUM_CPUS = {self.slots}",
            f"MEMORY = {self.slots * 1024}",
            f"MAX_JOBS_RUNNING = {self.slots * 2}",
            *(f"{key} = {value}" for key, value in SETTINGS.items()),
        ]
        overrides = CHROOT / OVERRIDES.lstrip("/")
        overrides.mkdir(exist_ok=True)
        (overrides / "99-soak").write_text("\n".join(lines) + "\n")
        self.client_config.write_text("\n".join([
            f"COLLECTOR_HOST = {COLLECTOR}",
            "NETWORK_INTERFACE = 127.0.0.1",
            f"SCHEDD_NAME = {SCHEDD}",
            "SEC_CLIENT_AUTHENTICATION_METHODS = CLAIMTOBE",
            "SEC_DEFAULT_AUTHENTICATION_METHODS = CLAIMTOBE",
            f"SEC_CLAIMTOBE_USER = {USER}",   # harvester-cli runs as root; the schedd refuses Owner root
            f"# {host}",
        ]) + "\n")
        self.client_config.chmod(0o644)

    def _local_dir(self) -> Path:
        return CHROOT / LOCAL_DIR.lstrip("/")

    def _fresh_local_dir(self) -> None:
        """An empty LOCAL_DIR owned by the chroot's condor account (nothing of an earlier soak kept)."""
        local = self._local_dir()
        shutil.rmtree(local, ignore_errors=True)
        passwd = (CHROOT / "etc/passwd").read_text().splitlines()
        uid, gid = next((int(f[2]), int(f[3])) for f in (line.split(":") for line in passwd) if f[0] == "condor")
        for sub in ("run/condor", "log/condor", "lock/condor", "spool/condor", "lib/condor/execute",
                    "lib/condor/cred_dir", "spool/condor/local_univ_execute"):
            path = local / sub
            path.mkdir(parents=True, exist_ok=True)
        for path in [local, *local.rglob("*")]:
            os.chown(path, uid, gid)
        (local / "lib/condor/execute").chmod(0o755)
        (local / "lib/condor/cred_dir").chmod(0o700)

    def _ensure_user(self) -> None:
        if subprocess.run(["id", USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-u", str(UID), "-m", USER], check=True)
        if subprocess.run(["chroot", str(CHROOT), "id", USER], capture_output=True).returncode != 0:
            subprocess.run(["chroot", str(CHROOT), "useradd", "-u", str(UID), "-m", USER], check=True)

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> "Pool":
        if os.geteuid() != 0:
            raise SystemExit("soak: the HTCondor pool needs root (a chroot, mounts)")
        self._ensure_chroot()
        self._ensure_user()
        self._mount()
        self._fresh_local_dir()
        self._write_config()
        env = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG" and not k.startswith("_CONDOR_")}
        env["CONDOR_CONFIG"] = CONFIG
        log = open(self.work / "condor_master.out", "w")
        self.master = subprocess.Popen(["chroot", str(CHROOT), "/usr/sbin/condor_master", "-f"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.master.poll() is not None:
                raise SystemExit(f"soak: condor_master exited {self.master.returncode}; its log ends:\n"
                                 f"{self._master_log()}")
            if self._ready():
                return self
            time.sleep(1)
        raise SystemExit(f"soak: the pool was not ready within 180 s; the MasterLog ends:\n{self._master_log()}")

    def _master_log(self) -> str:
        try:
            return "\n".join((self._local_dir() / "log/condor/MasterLog").read_text().splitlines()[-15:])
        except OSError as exc:
            return str(exc)

    def _ready(self) -> bool:
        """The schedd is in the collector and the slots' cores add up (one partitionable slot, as minicondor
        makes it: each pilot claims a dynamic slot of its own)."""
        env = {**os.environ, "CONDOR_CONFIG": CONFIG}
        status = ["chroot", str(CHROOT), "condor_status", "-pool", COLLECTOR]
        slots = subprocess.run([*status, "-af", "Cpus"], capture_output=True, text=True, env=env)
        schedds = subprocess.run([*status, "-schedd", "-af", "Name"], capture_output=True, text=True, env=env)
        cores = sum(int(v) for v in slots.stdout.split() if v.isdigit())
        return cores >= self.slots and SCHEDD in schedds.stdout.split()

    def stop(self) -> None:
        if self.master is not None and self.master.poll() is None:
            self.master.terminate()   # the master shuts its daemons down
            try:
                self.master.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait()
        self.master = None
        if self.keep_logs:
            shutil.copytree(self._local_dir() / "log/condor", self.work / "condor-logs", dirs_exist_ok=True)
        shutil.rmtree(self._local_dir(), ignore_errors=True)
        test_pool = CHROOT.with_name(CHROOT.name + ".master.pid")
        test_pool_runs = test_pool.exists() and Path(f"/proc/{test_pool.read_text().strip() or 0}").exists()
        if not test_pool_runs:   # the test pool's script mounts them again when it starts
            for target in reversed(self.mounted):
                subprocess.run(["umount", str(target)], capture_output=True)
        self.mounted = []

    def __enter__(self) -> "Pool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the pool costs -----------------------------------------------------------------

    def daemon_pids(self) -> list[int]:
        """The master and its daemons (their children, shadows and starters, count in their cutime once
        reaped)."""
        if self.master is None:
            return []
        pids, frontier = [], [self.master.pid]
        while frontier:
            pid = frontier.pop()
            pids.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            frontier += [int(c) for c in children]
        return pids

    def schedd_param(self, name: str) -> str:
        result = subprocess.run(["chroot", str(CHROOT), "condor_config_val", name], capture_output=True, text=True,
                                env={**os.environ, "CONDOR_CONFIG": CONFIG})
        return result.stdout.strip() or result.stderr.strip()
