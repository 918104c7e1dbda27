"""The real HTCondor pool: minicondor in a Debian chroot (peers/htcondor-pool.sh), a loopback pool whose
schedd also stands in for an HTCondor-CE (grid universe, condor-C). For the HTCondor tests
(tests/integration/htcondor) and the token tests (tests/integration/tokens).

The pool needs root and mount rights; it is started once per session (about 40 s the first time on a machine,
a few seconds when the chroot exists) and stopped by the last session that used it. The test pilot runs
inside the pool with the chroot's python3; it gets harvester_cli as a zip (transfer_input_files).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from harvester_cli.panda.sim import certs
from tests.support import PEERS, ROOT

POOL_SCRIPT = PEERS / "htcondor-pool.sh"
CHROOT = Path(os.environ.get("CONDOR_CHROOT", "/tmp/minicondor-sid"))
CLIENT_CONFIG = Path(f"{CHROOT}.client_config")
JOBDIR = Path("/tmp/htc-jobs")
USER, UID = "ctest", 2000
SCHEDD = f"ce@{socket.gethostname().split('.')[0]}"
COLLECTOR = "127.0.0.1:9618"
PILOT = "PYTHONPATH=$PWD/harvester_cli.zip python3 -m harvester_cli.panda.sim.pilot"


class Pool:
    def __init__(self, session_dir: Path, package_zip: Path, proxy: Path, ca: Path):
        self.session_dir = session_dir
        self.package_zip = package_zip
        self.proxy = proxy
        self.ca = ca

    def schedd(self):
        import htcondor2

        return htcondor2.Schedd(htcondor2.Collector(COLLECTOR).locate(htcondor2.DaemonType.Schedd, SCHEDD))

    def jobs(self, harvester_id: str, *, history: bool = False, projection=()):
        constraint = f'harvesterID == "{harvester_id}" && SubmitterGlobalJobId =?= undefined'
        schedd = self.schedd()
        if history:
            return list(schedd.history(constraint, list(projection)))
        return list(schedd.query(constraint, list(projection)))


def give(path: Path, mode: int) -> None:
    os.chown(path, UID, UID)
    path.chmod(mode)


def _package_zip(target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for path in (ROOT / "harvester_cli").rglob("*.py"):
            z.write(path, path.relative_to(ROOT))


def pool_env() -> dict:
    """The daemons read the chroot's configuration, never this process's client settings."""
    return {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG" and not k.startswith("_CONDOR_")}


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI, with an AuthorityKeyIdentifier on the host certificate: the pilots in the pool run the
    chroot's Python 3.13, whose strict verification (VERIFY_X509_STRICT) refuses a server certificate
    without one (sim/certs.py leaves it out; Python 3.11 on the host does not mind)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    created = certs.create(tmp_path_factory.mktemp("pki-htcondor"))
    ca = x509.load_pem_x509_certificate(created.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key((created.directory / "cakey.pem").read_bytes(), None)
    host = x509.load_pem_x509_certificate(created.host_cert.read_bytes())
    if not any(e.oid == x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER for e in host.extensions):
        host_key = serialization.load_pem_private_key(created.host_key.read_bytes(), None)
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        builder = (x509.CertificateBuilder().subject_name(host.subject).issuer_name(ca.subject)
                   .public_key(host_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + dt.timedelta(days=30)))
        for extension in host.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                        critical=False)
        created.host_cert.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return created


@pytest.fixture(scope="session")
def condor_pool(tmp_path_factory, pki):
    if os.geteuid() != 0:
        pytest.fail("the HTCondor pool needs root and mount rights (a chroot with minicondor): run the suite as "
                    "root, as CI does (scripts/test); or deselect with -m 'not htcondor'")
    users = open(f"{CHROOT}.users.lock", "w")
    fcntl.flock(users, fcntl.LOCK_SH)   # the last session that used the pool stops it (see below)
    started = time.monotonic()
    result = subprocess.run(["bash", str(POOL_SCRIPT), "start"], capture_output=True, text=True, timeout=900,
                            env=pool_env())
    if result.returncode != 0:
        users.close()
        pytest.fail(f"the HTCondor pool did not start (tests/support/peers/htcondor-pool.sh start exited "
                    f"{result.returncode}):\n{result.stdout}\n{result.stderr}")
    print(f"\nHTCondor pool ready in {time.monotonic() - started:.1f} s: {result.stdout.strip()}")
    old_config = os.environ.get("CONDOR_CONFIG")
    os.environ["CONDOR_CONFIG"] = str(CLIENT_CONFIG)
    import htcondor2

    htcondor2.reload_config()
    JOBDIR.mkdir(exist_ok=True)
    for stale in JOBDIR.glob("pytest-*"):   # left by sessions that were killed
        pid = stale.name.removeprefix("pytest-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    session_dir = JOBDIR / f"pytest-{os.getpid()}"
    shutil.rmtree(session_dir, ignore_errors=True)
    session_dir.mkdir()
    give(session_dir, 0o755)
    package_zip = session_dir / "harvester_cli.zip"
    _package_zip(package_zip)
    proxy, ca = session_dir / "proxy.pem", session_dir / "ca.pem"
    shutil.copyfile(pki.proxy, proxy)
    give(proxy, 0o600)
    shutil.copyfile(pki.ca_file, ca)
    give(ca, 0o644)
    yield Pool(session_dir, package_zip, proxy, ca)
    if old_config is None:
        os.environ.pop("CONDOR_CONFIG", None)
    else:
        os.environ["CONDOR_CONFIG"] = old_config
    shutil.rmtree(session_dir, ignore_errors=True)
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        users.close()   # another session still uses the pool
        return
    subprocess.run(["bash", str(POOL_SCRIPT), "stop"], capture_output=True, timeout=300, env=pool_env())
    users.close()


@pytest.fixture
def htc(condor_pool, harness, request):
    """Per test: a job directory the job owner may write, the instance overrides that put logs and work there,
    and at the end every job of this test's harvester removed from the pool."""
    test_dir = condor_pool.session_dir / request.node.name[:60]
    test_dir.mkdir()
    give(test_dir, 0o755)
    overrides = {"log_dir": str(test_dir / "logs"), "work_dir": str(test_dir / "work"),
                 "panda": {"proxy": str(condor_pool.proxy), "ca": str(condor_pool.ca)}}
    yield HTC(condor_pool, harness, overrides)
    import htcondor2

    try:
        schedd = condor_pool.schedd()
        constraint = f'harvesterID == "{harness.harvester_id}"'
        schedd.act(htcondor2.JobAction.Remove, constraint, reason=("test ended", 1))
        schedd.act(htcondor2.JobAction.RemoveX, constraint, reason=("test ended", 1))
    except Exception:
        pass


class HTC:
    def __init__(self, pool: Pool, harness, overrides: dict):
        self.pool = pool
        self.harness = harness
        self.overrides = overrides

    def queue(self, mode: str = "pull", pilot: str = PILOT, local: bool = False, **options) -> dict:
        """A queue on the pool's schedd: located through the collector, or (local) as this host's own schedd."""
        extra_queue = options.pop("queue", {})
        where = {} if local else {"schedd": SCHEDD, "collector": COLLECTOR}
        return {"mode": mode, "backend": "htcondor", "pilot": pilot, **extra_queue,
                "backend_options": {**where, "job_owner": USER, "input_files": [str(self.pool.package_zip)], **options}}

    def instance(self, queues: dict, **overrides):
        return self.harness.instance(queues, **{**self.overrides, **overrides})

    def write_config(self, queues: dict):
        return self.harness.write_config(queues, **self.overrides)

    def jobs(self, **kwargs):
        return self.pool.jobs(self.harness.harvester_id, **kwargs)


def pool_state() -> str:
    """The schedd's jobs and the collector's slots, for a failure message."""
    import htcondor2

    try:
        schedd = htcondor2.Schedd(htcondor2.Collector(COLLECTOR).locate(htcondor2.DaemonType.Schedd, SCHEDD))
        jobs = [(a.get("ClusterId"), a.get("ProcId"), a.get("JobStatus"), a.get("HoldReason"))
                for a in schedd.query("true", ["ClusterId", "ProcId", "JobStatus", "HoldReason"])]
        slots = [(a.get("Name"), a.get("State"), a.get("Activity"))
                 for a in htcondor2.Collector(COLLECTOR).query(htcondor2.AdTypes.Startd, "true", ["Name", "State", "Activity"])]
        return f"jobs {jobs}; slots {slots}"
    except Exception as exc:
        return f"cannot ask the pool: {exc}"
