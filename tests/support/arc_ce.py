"""A real A-REX 6.17 (REST 1.0, fork LRMS) started by peers/arc-ce.sh for the session, and the zip of
harvester_cli and its pure-Python dependencies that its jobs run (the test pilot). For the ARC tests
(tests/integration/arc) and the token tests (tests/integration/tokens)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import PEERS
from tests.support.harness import free_port

SCRIPT = PEERS / "arc-ce.sh"
INFO_PERIOD = 3
PILOT_ZIP = "harvester-pilot.zip"


@dataclass
class ArcCE:
    base: Path
    port: int

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/arex"

    @property
    def ca_dir(self) -> Path:
        return self.base / "certificates"

    def logs(self) -> str:
        out = []
        for name in ("arex.log", "ws-interface.log"):
            path = self.base / "log" / name
            if path.exists():
                out.append(f"--- {path} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(out)


def _openssl_dn(cert_file: Path) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    short = {NameOID.DOMAIN_COMPONENT: "DC", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
             NameOID.ORGANIZATION_NAME: "O", NameOID.COUNTRY_NAME: "C"}
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return "".join(f"/{short[a.oid]}={a.value}" for a in cert.subject)


@pytest.fixture(scope="session")
def arc_ce(pki):
    """A-REX on a free loopback port for the whole session; fails (never skips) if it cannot start."""
    if os.geteuid() != 0:
        pytest.fail("the ARC CE tests start A-REX and map jobs to a local account: run them as root "
                    "(CI does: bash scripts/test)")
    if not shutil.which("arched"):
        pytest.fail("A-REX is not installed (no arched): `bash scripts/test` as root installs "
                    "scripts/apt-packages.txt, or run `bash tests/support/peers/arc-ce.sh install`")
    # Not under pytest's 0700 tmp tree: the job user must reach its session directory.
    base = Path(tempfile.mkdtemp(prefix="harvester-cli-arc-"))
    base.chmod(0o755)
    ce = ArcCE(base, free_port())
    env = {**os.environ, "ARC_CE_BASE": str(base), "ARC_CE_PORT": str(ce.port), "ARC_CE_INFO_PERIOD": str(INFO_PERIOD),
           "ARC_CE_TRUST_CA": str(pki.ca_file), "ARC_CE_TRUST_DN": _openssl_dn(pki.user_cert)}
    t0 = time.monotonic()
    for step in ("setup", "start"):
        run = subprocess.run(["bash", str(SCRIPT), step], env=env, capture_output=True, text=True, timeout=180)
        if run.returncode != 0:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
            pytest.fail(f"A-REX did not start: `arc-ce.sh {step}` exited {run.returncode}\n{run.stderr[-3000:]}\n"
                        f"{ce.logs()}")
    print(f"\nA-REX up at {ce.url} in {time.monotonic() - t0:.1f} s")
    yield ce
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pilot_zip(tmp_path_factory) -> Path:
    """harvester_cli (the test pilot) and what its pull mode imports, pure Python, for the CE's python3."""
    path = tmp_path_factory.mktemp("arc-pilot") / PILOT_ZIP
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for package in ("harvester_cli", "requests", "urllib3", "idna", "certifi", "charset_normalizer", "tenacity"):
            root = Path(importlib.import_module(package).__file__).parent
            for f in sorted(root.rglob("*")):
                if f.is_file() and f.suffix in (".py", ".pem") and "__pycache__" not in f.parts:
                    z.write(f, f.relative_to(root.parent).as_posix())
    return path


def arc_queue(ce: ArcCE, pilot_zip: Path, mode: str, url: str | None = None, **options) -> dict:
    return {"mode": mode, "backend": "arc", "backend_options": {
        "endpoints": [url or ce.url], "queue": "fork", "ca": str(ce.ca_dir), "input_files": [str(pilot_zip)],
        "environment": {"PYTHONPATH": f"$PWD/{PILOT_ZIP}"}, **options}}


def ce_state(instance, queue: str, job_id: str) -> str:
    """The CE's own answer for one job (REST), through the backend's client: a state or the HTTP status."""
    backend = instance.backend(instance.config.queues[queue])
    endpoint = backend.options.endpoints[0]
    (result,) = backend._client(endpoint).getJobsStatus([job_id])
    return str(getattr(result.value, "status", "")) if result.error else result.value
