"""The real Slurm cluster: Debian's slurmctld, slurmd and munged started by peers/slurm.sh (one node on loopback
with more CPUs than the machine has, partitions `debug` (the default) and `second`, no slurmdbd), once per
session on free ports under its own directory, and a per-test view of it for this test's harvester. For the
Slurm tests (tests/integration/slurm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harvester_cli.backends import _slurm_status as slurm_status
from tests.support import PEERS, ROOT
from tests.support.harness import free_port

SCRIPT = PEERS / "slurm.sh"
PILOT = f"PYTHONPATH={ROOT} {{python}} -m harvester_cli.panda.sim.pilot"


@dataclass
class Cluster:
    base: Path
    env: dict

    @property
    def conf(self) -> Path:
        return self.base / "slurm.conf"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), check=False, capture_output=True, text=True, env=self.env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def script(self, *args: str) -> None:
        self.run("bash", str(SCRIPT), *args)

    def jobs(self, harvester_id: str) -> list[dict]:
        """squeue's view of this harvester's jobs (array tasks one per line)."""
        fields = ("JobArrayID", "JobID", "State", "Partition", "Name", "Comment")
        out = self.run("squeue", "-h", "-r", "-t", "all",
                       "-O", ",".join(f"{f}:0{slurm_status.SEP}" for f in fields[:-1]) + f",{fields[-1]}:0").stdout
        found = [dict(zip(fields, line.split(slurm_status.SEP))) for line in out.splitlines() if line.strip()]
        return [j for j in found if j["Name"].startswith(f"{harvester_id}:")]

    def cancel_all(self, harvester_id: str) -> None:
        ids = [j["JobArrayID"] for j in self.jobs(harvester_id) if j["State"] in ("PENDING", "RUNNING")]
        if ids:
            self.run("scancel", *ids, check=False)

    def ctld_pid(self) -> int:
        return int((self.base / "run" / "slurmctld.pid").read_text())

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.base / "log" / name
            if path.exists():
                out.append(f"--- {name} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)


@pytest.fixture(scope="session")
def cluster():
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start munged, slurmctld and slurmd: run them as root (CI does: bash scripts/test)")
    if not (shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged")):
        pytest.fail("Slurm is not installed: `bash scripts/test` as root installs scripts/apt-packages.txt, "
                    "or run `bash tests/support/peers/slurm.sh install`")
    base = Path(tempfile.mkdtemp(prefix="harvester-cli-slurm-"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))},
           "SLURM_BASE": str(base), "SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port()),
           "SLURM_CONF": str(base / "slurm.conf")}
    found = Cluster(base, env)
    started = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT), "start"], check=False, capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop"], check=False, capture_output=True, env=env, timeout=120)
        pytest.fail(f"Slurm did not start (tests/support/peers/slurm.sh start exited {result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}\n{found.logs()}")
    print(f"\nSlurm up in {time.monotonic() - started:.1f} s: {result.stdout.strip()}")
    yield found
    subprocess.run(["bash", str(SCRIPT), "stop"], check=False, capture_output=True, env=env, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def slurm(cluster, harness):
    yield Slurm(cluster, harness)
    cluster.cancel_all(harness.harvester_id)


class Slurm:
    def __init__(self, cluster: Cluster, harness):
        self.cluster = cluster
        self.harness = harness

    def queue(self, mode: str = "pull", pilot: str = PILOT, queue: dict | None = None, **options) -> dict:
        return {"mode": mode, "backend": "slurm", "pilot": pilot, **(queue or {}),
                "backend_options": {"slurm_conf": str(self.cluster.conf), **options}}

    def instance(self, queues: dict, **overrides):
        return self.harness.instance(queues, **overrides)

    def jobs(self) -> list[dict]:
        return self.cluster.jobs(self.harness.harvester_id)
