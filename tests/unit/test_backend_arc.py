"""ARC backend without a CE: the ADL builder, the wrapper, the delegation CSR fix, state mapping and options.

The same behaviour against a real A-REX is in tests/test_arc.py (`pytest -m arc`).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harvester_cli import config as config_module
from harvester_cli import model
from harvester_cli.backends import _arc_compat
from harvester_cli.backends import _arc_description as adl
from harvester_cli.panda.jobs import PandaJob
from harvester_cli.backends.base import BackendContext, WorkerRef
from harvester_cli.errors import ConfigError

NS = {"a": adl.ADL, "n": adl.NORDUGRID_ADL}


# -- sizes, names, inputs -------------------------------------------------------------------------

@pytest.mark.parametrize("memory, cores, expected", [
    (2000, 1, 2000), (2001, 1, 2500), (1, 1, 500), (0, 1, 500), (16000, 8, 2000), (16001, 8, 2500),
    (4000, 3, 1500), (3000, 4, 1000),
])
def test_memory_per_core_is_rounded_up_to_500_mb_steps(memory, cores, expected):
    assert adl.memory_per_core_mb(memory, cores) == expected


@pytest.mark.parametrize("job, expected", [
    (None, 86400),                                           # pull: the queue's walltime
    ({"maxWalltime": "NULL", "maxCpuCount": 0}, 86400),      # the job says nothing
    ({"maxWalltime": 3600, "maxCpuCount": 7200}, 3600),      # maxWalltime first
    ({"maxWalltime": "NULL", "maxCpuCount": "7200"}, 7200),  # else maxCpuCount
    ({"maxWalltime": 10 ** 7}, 86400),                       # capped by the queue
    ({"maxWalltime": -5, "maxCpuCount": "x"}, 86400),
])
def test_walltime_comes_from_the_job_limits_capped_by_the_queue(job, expected):
    assert adl.walltime_seconds(job and PandaJob.from_dict(job), cap=86400) == expected


def test_staged_inputs_come_from_in_files_and_scopes_through_the_url_template():
    job = PandaJob.from_dict({"inFiles": "EVNT.1,EVNT.2", "scopeIn": "mc23,data23"})
    assert adl.staged_inputs(job, "https://data.example.org/{scope}/{lfn}") == {
        "EVNT.1": "https://data.example.org/mc23/EVNT.1", "EVNT.2": "https://data.example.org/data23/EVNT.2"}
    assert adl.staged_inputs(job, None) == {}
    assert adl.staged_inputs(PandaJob.from_dict({"inFiles": "", "scopeIn": "NULL"}), "x/{lfn}") == {}
    assert adl.staged_inputs(PandaJob.from_dict({"inFiles": "A", "scopeIn": "NULL"}),
                             "rucio://r/{scope}/{lfn}") == {"A": "rucio://r//A"}
    # the lists are parallel by position: an empty entry keeps the next file's scope in its place
    assert adl.staged_inputs(PandaJob.from_dict({"inFiles": "A,,B", "scopeIn": "s1,s2,s3"}), "{scope}/{lfn}") == {
        "A": "s1/A", "B": "s3/B"}


def test_input_file_names_are_the_last_path_component():
    assert adl.input_file_name("/opt/pilot/pilot3.tar.gz") == "pilot3.tar.gz"
    assert adl.input_file_name("https://cern.ch/pilot/runpilot2-wrapper.sh?x=1") == "runpilot2-wrapper.sh"


def test_job_name_carries_harvester_and_worker_id():
    assert adl.job_name("CERN_central_A", 4711) == "CERN_central_A:4711"


# -- the ADL document -----------------------------------------------------------------------------

def _activity(**overrides):
    args = dict(name="h1:7", n_core=8, memory_mb=16001, walltime=3600, queue="grid", runtime_environments=[
        "ENV/PROXY", "APPS/HEP/ATLAS-SITE"], delegation_id="deleg42",
        uploads={adl.WRAPPER: "/w/harvester-worker.sh", "pandaJobData.out": "/w/pandaJobData.out"},
        remote_inputs={"EVNT.1": "https://data.example.org/mc23/EVNT.1?a=1&b=2"},
        outputs=["heartbeat.json", "jobReport.json", "pilotlog.txt"], annotations=["PandaID=123"])
    args.update(overrides)
    return adl.activity(**args)


def test_adl_has_size_queue_rtes_inputs_outputs_name_and_delegation():
    root = ET.fromstring(adl.bulk([_activity()]))
    assert root.tag == f"{{{adl.ADL}}}ActivityDescription"
    assert root.findtext("a:ActivityIdentification/a:Name", namespaces=NS) == "h1:7"
    assert root.findtext("a:ActivityIdentification/a:Annotation", namespaces=NS) == "PandaID=123"
    assert root.findtext("a:Application/a:Executable/a:Path", namespaces=NS) == adl.WRAPPER
    assert root.findtext("a:Application/a:Output", namespaces=NS) == "pilot.out"
    assert root.findtext("a:Application/a:Error", namespaces=NS) == "pilot.err"
    res = root.find("a:Resources", NS)
    assert [e.text for e in res.findall("a:RuntimeEnvironment/a:Name", NS)] == ["ENV/PROXY", "APPS/HEP/ATLAS-SITE"]
    assert int(res.findtext("a:IndividualPhysicalMemory", namespaces=NS)) == 2500 * 1024 * 1024   # per core
    assert res.findtext("a:SlotRequirement/a:NumberOfSlots", namespaces=NS) == "8"
    assert res.findtext("a:SlotRequirement/a:SlotsPerHost", namespaces=NS) == "8"
    assert res.findtext("a:QueueName", namespaces=NS) == "grid"
    assert res.findtext("a:WallTime", namespaces=NS) == "3600"
    assert res.findtext("a:TotalCPUTime", namespaces=NS) == str(3600 * 8)
    staging = root.find("a:DataStaging", NS)
    inputs = {f.findtext("a:Name", namespaces=NS): f for f in staging.findall("a:InputFile", NS)}
    assert list(inputs) == [adl.WRAPPER, "pandaJobData.out", "EVNT.1"]
    assert inputs[adl.WRAPPER].findtext("a:IsExecutable", namespaces=NS) == "true"
    assert inputs["pandaJobData.out"].find("a:Source", NS) is None          # uploaded by the client
    assert inputs["EVNT.1"].findtext("a:Source/a:URI", namespaces=NS) == "https://data.example.org/mc23/EVNT.1?a=1&b=2"
    assert [e.text for e in staging.findall("a:OutputFile/a:Name", NS)] == [
        "pilot.out", "pilot.err", "heartbeat.json", "jobReport.json", "pilotlog.txt"]
    assert staging.findtext("n:DelegationID", namespaces=NS) == "deleg42"


def test_adl_without_queue_or_rtes_and_bulk_of_several():
    single = ET.fromstring(adl.bulk([_activity(queue=None, runtime_environments=[])]))
    assert single.find("a:Resources/a:QueueName", NS) is None
    assert single.find("a:Resources/a:RuntimeEnvironment", NS) is None
    several = ET.fromstring(adl.bulk([_activity(name="h1:1"), _activity(name="h1:2")]))
    assert several.tag == "ActivityDescriptions"
    assert [a.findtext("a:ActivityIdentification/a:Name", namespaces=NS) for a in several] == ["h1:1", "h1:2"]


def test_values_are_escaped_by_construction():
    text = adl.bulk([_activity(name='h<1>&"x":7')])
    assert ET.fromstring(text).findtext("a:ActivityIdentification/a:Name", namespaces=NS) == 'h<1>&"x":7'


# -- the wrapper -----------------------------------------------------------------------------------

def test_wrapper_exports_environment_runs_the_pilot_and_keeps_its_exit_code(tmp_path):
    script = adl.wrapper_script(
        7, "h1", "Q", "echo \"A=$A B=$B CA=$HARVESTER_PANDA_CA PROXY=$X509_USER_PROXY\"; exit 3",
        {"A": "it's $HOME", "X509_USER_PROXY": "/harvester/host/proxy", "HARVESTER_PANDA_CA": "/host/ca.pem",
         "bad name": "x"},
        {"B": "$PWD/pilot.zip"})
    (tmp_path / adl.WRAPPER).write_text(script)
    env = {"PATH": "/usr/bin:/bin", "X509_USER_PROXY": "/ce/delegated.proxy", "X509_CERT_DIR": "/ce/certificates"}
    run = subprocess.run(["/bin/sh", adl.WRAPPER], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 3
    # spec values literal, CE values expanded there; the CE's proxy and CA directory win over host paths
    assert run.stdout == f"A=it's $HOME B={tmp_path}/pilot.zip CA=/ce/certificates PROXY=/ce/delegated.proxy\n"
    assert "harvester-cli worker 7: end" in run.stderr and "exit 3" in run.stderr


# -- the delegation CSR fix -----------------------------------------------------------------------

def _csr_with_version(version: int):
    """A certificate request signed over version `version`, as A-REX 6.17 makes them (version 2)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "delegation")]))
           .sign(key, hashes.SHA256()))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    tbs = bytearray(csr.tbs_certrequest_bytes)
    at = _arc_compat._content_offset(tbs, 0)
    assert tbs[at:at + 3] == b"\x02\x01\x00"   # CertificationRequestInfo starts with version INTEGER 0
    tbs[at + 2] = version
    signature = key.sign(bytes(tbs), padding.PKCS1v15(), hashes.SHA256())
    start = der.index(csr.tbs_certrequest_bytes)
    der[start:start + len(tbs)] = tbs
    at = der.rindex(csr.signature)
    der[at:at + len(signature)] = signature
    import base64

    body = base64.encodebytes(bytes(der)).decode()
    return key, f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def test_cryptography_refuses_arex_csr_version_2_which_breaks_pyarcrest_delegation():
    from cryptography import x509
    from pyarcrest.x509 import pemToCSR

    _, pem = _csr_with_version(2)
    with pytest.raises(x509.InvalidVersion, match="2 is not a valid CSR version"):
        x509.load_pem_x509_csr(pem.encode())
    with pytest.raises(x509.InvalidVersion):   # pyarcrest's own parser: createDelegation fails here
        pemToCSR(pem)


def test_lenient_csr_verifies_the_original_signature_and_is_enough_for_pyarcrest_signing(tmp_path):
    from cryptography import x509
    from pyarcrest.x509 import signProxyCSR

    from harvester_cli.panda.sim import certs

    key, pem = _csr_with_version(2)
    csr = _arc_compat.load_csr(pem)
    assert csr.is_signature_valid
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()
    tampered = pem.replace(pem.splitlines()[5], pem.splitlines()[5][:-4] + "AAAA")
    assert not _arc_compat.load_csr(tampered).is_signature_valid
    # A standard request passes through untouched.
    _, standard = _csr_with_version(0)
    assert isinstance(_arc_compat.load_csr(standard), x509.CertificateSigningRequest)
    # pyarcrest signs a delegated proxy with what load_csr returns.
    pki = certs.create(tmp_path / "pki")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        delegated = signProxyCSR(csr, str(pki.proxy))
    assert delegated.public_key().public_numbers() == key.public_key().public_numbers()


def test_install_patches_the_name_pyarcrest_uses():
    import pyarcrest.arc

    original = pyarcrest.arc.pemToCSR
    try:
        _arc_compat.install()
        assert pyarcrest.arc.pemToCSR is _arc_compat.load_csr
    finally:
        pyarcrest.arc.pemToCSR = original


# -- options and light imports -----------------------------------------------------------------------

def _config(options: dict) -> dict:
    return {"harvester_id": "h", "panda": {"url": "https://panda:25443/api/v1"},
            "queues": {"ARC_Q": {"mode": "push", "backend": "arc", "backend_options": options, "pilot": "true"}}}


def test_options_are_validated():
    config = config_module.parse(_config({"endpoints": ["https://ce.example.org/arex"],
                                          "environment": {"PYTHONPATH": "$PWD/p.zip"}}))
    options = config.queues["ARC_Q"].backend_options
    assert options.endpoints == ["https://ce.example.org/arex"] and options.output_files == ["pilotlog.txt"]
    assert "Failed in data staging" in options.transient_errors
    with pytest.raises(ConfigError, match="missing required key 'endpoints'"):
        config_module.parse(_config({}))
    with pytest.raises(ConfigError, match="expected an https:// URL"):
        config_module.parse(_config({"endpoints": ["http://ce/arex"]}))
    with pytest.raises(ConfigError, match="not a shell variable name"):
        config_module.parse(_config({"endpoints": ["https://ce/arex"], "environment": {"A B": "x"}}))
    with pytest.raises(ConfigError, match="needs {lfn}"):
        config_module.parse(_config({"endpoints": ["https://ce/arex"], "stage_inputs": "https://x/{scope}"}))


def test_config_check_with_an_arc_queue_does_not_import_pyarcrest():
    code = ("import sys, json; from harvester_cli import config; from harvester_cli import instance; "
            f"c = config.parse(json.loads({json.dumps(json.dumps(_config({'endpoints': ['https://ce/arex']})))})); "
            "from harvester_cli.backends import arc; "
            "print(sorted(m for m in sys.modules if m.startswith(('pyarcrest', 'cryptography'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- state mapping against a scripted client ----------------------------------------------------------

class _Result:
    def __init__(self, value, error=False):
        self.value, self.error = value, error


class _HTTPError(Exception):
    def __init__(self, status, text=""):
        super().__init__(status, text)
        self.status = status


class FakeClient:
    """Answers like pyarcrest's ARCRest_1_0 from a table: job id -> (state, info, session files)."""

    def __init__(self, jobs):
        self.jobs = jobs
        self.down = False

    def _up(self):
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")

    def getJobsStatus(self, ids):
        self._up()
        return [_Result(self.jobs[i][0]) if i in self.jobs else _Result(_HTTPError(404, "Job not found"), True)
                for i in ids]

    def getJobsInfo(self, ids):
        self._up()
        return [_Result({"state": self.jobs[i][0], **self.jobs[i][1]}) for i in ids]

    def downloadListing(self, job_id, path):
        self._up()
        return {"file": list(self.jobs[job_id][2]), "dirs": []}

    def downloadFile(self, job_id, name, path):
        self._up()
        Path(path).write_text(self.jobs[job_id][2][name])

    def downloadDiagnoseFile(self, job_id, name, path):
        self._up()
        Path(path).write_text("arex log\n")

    def killJobs(self, ids):
        self._up()
        return [_Result(True) if i in self.jobs else _Result(_HTTPError(404, "Job not found"), True) for i in ids]

    def close(self):
        pass


@pytest.fixture
def backend(tmp_path):
    from harvester_cli.backends.arc import ArcBackend

    config = config_module.parse(_config({"endpoints": ["https://ce/arex"]}))
    proxy = tmp_path / "proxy.pem"
    proxy.write_text("not used")
    b = ArcBackend(config.queues["ARC_Q"], BackendContext("h", tmp_path / "work", proxy=proxy))
    return b


def _install(backend, client):
    proxy = backend.context.proxy
    backend._clients["https://ce/arex"] = (client, (str(proxy), proxy.stat().st_mtime_ns))


def _ref(tmp_path, worker_id, batch_id, status="running"):
    return WorkerRef(worker_id, "ARC_Q", batch_id, "host", "https://ce/arex", status, tmp_path / "logs" / str(worker_id))


def test_states_map_to_worker_states_and_ended_jobs_bring_their_outputs(tmp_path, backend):
    end = dt.datetime(2026, 1, 2, 3, 4, 5)
    client = FakeClient({
        "q": ("QUEUING", {}, {}), "r": ("EXITINGLRMS", {}, {}), "k": ("KILLING", {}, {}), "o": ("OTHER", {}, {}),
        "h": ("HELD", {}, {}),
        "f": ("FINISHED", {"ExitCode": 0, "EndTime": end}, {"pilot.out": "out", "heartbeat.json": "{}", "junk": "x"}),
        "x": ("FAILED", {"ExitCode": 3, "Error": ["LRMS error: (3) Job finished with wrong exit code - 3 != 0"]}, {}),
        "t": ("FAILED", {"Error": ["Failed in data staging: Failed checking source replica"]}, {}),
        "c": ("KILLED", {"Error": ["Job is canceled by external request"]}, {}),
    })
    _install(backend, client)
    ids = ["q", "r", "k", "o", "h", "f", "x", "t", "c", "gone"]
    refs = [_ref(tmp_path, n, i, "idle" if i == "o" else "running") for n, i in enumerate(ids, 1)]
    seen = {i: o for i, o in zip(ids, backend.check(refs))}
    assert {i: o.status for i, o in seen.items()} == {
        "q": model.SUBMITTED, "r": model.RUNNING, "k": model.RUNNING, "o": model.IDLE, "h": model.HELD,
        "f": model.FINISHED, "x": model.FAILED, "t": model.FAILED, "c": model.CANCELLED, "gone": model.MISSING}
    assert seen["f"].end_time == end.replace(tzinfo=dt.timezone.utc).timestamp() and seen["f"].exit_code == 0
    assert seen["x"].exit_code == 3 and "wrong exit code - 3" in seen["x"].diag and not seen["x"].resubmit
    assert seen["t"].resubmit and "data staging" in seen["t"].diag
    assert seen["c"].native_status == "KILLED" and "canceled" in seen["c"].diag
    assert "unknown to https://ce/arex" in seen["gone"].diag
    logs = tmp_path / "logs" / "6"
    assert sorted(p.name for p in logs.iterdir()) == ["heartbeat.json", "pilot.log", "pilot.out"]
    assert backend.fetch_outputs(refs[5], ["heartbeat.json", "jobReport.json"]) == {"heartbeat.json": logs / "heartbeat.json"}


def test_an_ended_job_whose_outputs_cannot_be_fetched_keeps_its_status_until_they_can(tmp_path, backend):
    client = FakeClient({"f": ("FINISHED", {"ExitCode": 0, "EndTime": dt.datetime.utcnow()}, {"heartbeat.json": "{}"})})
    _install(backend, client)
    ref = _ref(tmp_path, 1, "f")
    original = client.downloadListing
    client.downloadListing = lambda *a: (_ for _ in ()).throw(ConnectionResetError(104, "reset"))
    (seen,) = backend.check([ref])
    assert seen.status == model.RUNNING and "outputs not retrieved yet" in seen.diag
    client.downloadListing = original
    _install(backend, client)
    (seen,) = backend.check([ref])
    assert seen.status == model.FINISHED and (ref.log_dir / "heartbeat.json").exists()


def test_an_unreachable_ce_is_an_error_of_the_whole_check_and_kill_reports_it_per_worker(tmp_path, backend):
    from harvester_cli.errors import BackendError

    client = FakeClient({"r": ("RUNNING", {}, {})})
    client.down = True
    _install(backend, client)
    ref = _ref(tmp_path, 1, "r")
    with pytest.raises(BackendError, match="unreachable"):
        backend.check([ref])
    _install(backend, client)
    (result,) = backend.kill([ref], "test")
    assert not result.ok and "unreachable" in result.error
    client.down = False
    _install(backend, client)
    assert [r.ok for r in backend.kill([ref, _ref(tmp_path, 2, "forgotten")], "test")] == [True, True]   # 404: gone


def test_the_example_queue_in_the_module_docs_is_a_valid_configuration():
    import tomllib

    from harvester_cli.backends import arc

    example = "\n".join(line[4:] for line in arc.__doc__.split("Example queue (TOML):")[1].splitlines())
    data = tomllib.loads('harvester_id = "h"\n[panda]\nurl = "https://panda:25443/api/v1"\n' + example)
    options = config_module.parse(data).queues["SITE_ARC"].backend_options
    assert len(options.endpoints) == 2 and options.stage_inputs.endswith("{scope}/{lfn}")
