"""WLCG bearer tokens per CE, proven against real CEs: a token issuer of our own (tests/support/peers/token_issuer.py:
HTTPS, OIDC discovery, JWKS, client credentials, RS256 and ES256), an A-REX that accepts that issuer's tokens
(tests/support/peers/arc-ce.sh with ARC_CE_TOKEN_ISSUER) and the HTCondor pool's schedd with SCITOKENS trusting it.
The CEs verify the tokens themselves: they fetch the issuer's JWKS over HTTPS.

The token A-REX trusts the simulator's CA (TLS) but maps no DN: only a token gets a job in. Token work against
the schedd runs through the CLI in a subprocess: htcondor2 holds the GIL while it authenticates, so an issuer
thread in this process could not answer the schedd's JWKS request (it times out).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from harvester_cli.state.schema import workers
from tests.support.arc_ce import SCRIPT, ArcCE, arc_queue
from tests.support.condor_pool import CHROOT, COLLECTOR, HTC, JOBDIR, SCHEDD, give, pool_env
from tests.support.harness import cycle_until, free_port, hold_panda_counts, rows, wait_until
from tests.support.peers.token_issuer import COMPUTE_SCOPES, TokenIssuer, decode

pytestmark = pytest.mark.tokens

CLIENT_ID, CLIENT_SECRET = "harvester-client", "planted-client-secret-4f1c9e"
PILOT_CLIENT, PILOT_SECRET = "pilot-client", "planted-pilot-secret-77ab2d"


# -- peers ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def issuer(pki):
    with TokenIssuer(pki.host_cert, pki.host_key, alg="RS256") as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        server.add_client(PILOT_CLIENT, PILOT_SECRET, scopes="openid")
        yield server


@pytest.fixture
def fresh_issuer(issuer):
    """The session's issuer with this test's counters and clients reset."""
    issuer.requests.clear()
    issuer.refuse_next.clear()
    issuer.add_client(CLIENT_ID, CLIENT_SECRET)
    yield issuer
    issuer.add_client(CLIENT_ID, CLIENT_SECRET)


@pytest.fixture(scope="session")
def token_ce(pki, issuer):
    """A second A-REX that admits WLCG tokens of `issuer` (aud = its https://localhost:PORT, compute.create)
    and no DN at all; fails (never skips) when it cannot start."""
    if os.geteuid() != 0:
        pytest.fail("the token CE tests start A-REX (and a mount namespace for its CA directory): run as root")
    if not shutil.which("arched"):
        pytest.fail("A-REX is not installed: bash scripts/test as root installs scripts/apt-packages.txt")
    base = Path(tempfile.mkdtemp(prefix="harvester-cli-arc-tokens-"))
    base.chmod(0o755)
    ce = ArcCE(base, free_port())
    env = {**os.environ, "ARC_CE_BASE": str(base), "ARC_CE_PORT": str(ce.port), "ARC_CE_INFO_PERIOD": "3",
           "ARC_CE_TRUST_CA": str(pki.ca_file), "ARC_CE_TOKEN_ISSUER": issuer.url}
    for step in ("setup", "start"):
        run = subprocess.run(["bash", str(SCRIPT), step], env=env, capture_output=True, text=True, timeout=180)
        if run.returncode != 0:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
            pytest.fail(f"token A-REX did not start: arc-ce.sh {step} exited {run.returncode}\n{run.stderr[-3000:]}")
    yield ce
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


def token_profiles(harness, issuer, pki, *, ce_dir: Path, **ce_settings) -> dict:
    """[tokens.ce] (a token per CE) and [tokens.pilot] (the pilots' PanDA token)."""
    tmp = harness.tmp_path
    return {
        "ce": {"directory": str(ce_dir), "endpoint": issuer.token_endpoint, "client_id": CLIENT_ID,
               "client_secret_file": str(secret_file(tmp, "ce.secret", CLIENT_SECRET)), "ca": str(pki.ca_file),
               "retries": 1, **ce_settings},
        "pilot": {"file": str(tmp / "pilot-tokens" / "panda_token"), "endpoint": issuer.token_endpoint,
                  "client_id": PILOT_CLIENT, "client_secret_file": str(secret_file(tmp, "pilot.secret", PILOT_SECRET)),
                  "audience": harness.sim.url.split("/api")[0], "scope": "openid", "ca": str(pki.ca_file)},
    }


def assert_no_secrets(harness, issuer, *outputs: str) -> None:
    """The planted client secrets and every token the issuer gave out appear in no output and no log file."""
    planted = [CLIENT_SECRET, PILOT_SECRET, *issuer.issued]
    texts = list(outputs)
    for root in (harness.tmp_path / "logs",):
        texts += [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()]
    for text in texts:
        for secret in planted:
            assert secret not in text


# -- ARC: REST with Authorization: Bearer ------------------------------------------------------------------

pytest_arc = pytest.mark.arc


@pytest_arc
def test_arc_pull_pilots_run_with_the_ce_token_and_reach_panda_with_their_own(harness, sim, token_ce, pilot_zip, pki,
                                                                                fresh_issuer, monkeypatch):
    """ce_credentials = token: no proxy anywhere. The CE admits the job on its token alone (it maps no DN); the
    pilot finds PANDA_AUTH_TOKEN beside it and PanDA accepts that token."""
    ids = sim.add_jobs("ARC_TOKENS", 2, jobPars="echo pulled with a token")
    hold_panda_counts(sim, monkeypatch)   # one pilot per job: every pilot ran one, below
    queue = {**arc_queue(token_ce, pilot_zip, "pull"), "empty_pilot_floor": 0, "ce_credentials": "token",
             "ce_token_profile": "ce", "pilot_token_profile": "pilot", "pilot_token_origin": "atlas"}
    tokens = token_profiles(harness, fresh_issuer, pki, ce_dir=harness.tmp_path / "ce-tokens")
    harness.write_config({"ARC_TOKENS": queue}, tokens=tokens)
    renewed = harness.cli_json("renew-proxy", "--no-mail")
    assert [p["action"] for p in renewed["profiles"]] == ["renewed", "renewed"], renewed
    audience = f"https://localhost:{token_ce.port}"
    ce_token = harness.tmp_path / "ce-tokens" / f"https_localhost_{token_ce.port}"
    assert decode(ce_token.read_text().strip())["aud"] == audience
    assert decode(ce_token.read_text().strip())["scope"] == COMPUTE_SCOPES
    assert oct(ce_token.stat().st_mode & 0o777) == "0o600"
    assert [r["form"].get("audience") for r in fresh_issuer.requests] == [audience, tokens["pilot"]["audience"]]
    sim.tokens.add((harness.tmp_path / "pilot-tokens" / "panda_token").read_text().strip())

    instance = harness.instance({"ARC_TOKENS": queue}, tokens=tokens)
    assert instance.config.panda.proxy is not None and instance.backend(instance.config.queues["ARC_TOKENS"]) \
        ._client(token_ce.url).proxypath is None   # the proxy is PanDA's own; the CE never sees it
    cycle_until(instance, lambda: all(sim.job_status(i) == "finished" for i in ids)
                and all(w.status == "finished" for w in rows(instance, workers)),
                timeout=150, what="pull jobs finished by pilots that came in on the CE's token")

    for w in rows(instance, workers):
        assert w.computing_element == token_ce.url
        out = (Path(w.log_dir) / "pilot.out").read_text()
        assert "test pilot: PanDA token panda_token, origin atlas" in out and "pulled with a token" in out
    assert len(fresh_issuer.requests) == 2   # the cycle asked the issuer nothing: one call per CE per renewal
    status = harness.cli_json("status")
    left = {t["audience"]: t["seconds_left"] for t in status["tokens"]}
    assert 3000 < left[audience] <= 3600 and left[tokens["pilot"]["audience"]] > 3000
    instance.close()
    assert_no_secrets(harness, fresh_issuer, renewed.__repr__(), harness.cli("status").stdout)


@pytest_arc
def test_arc_refuses_other_audience_expired_and_scopeless_tokens_one_line_per_worker(harness, sim, token_ce, pilot_zip,
                                                                                     pki, fresh_issuer):
    """Each refusal is the CE's own (a bare 403 from A-REX); harvester-cli says per worker which CE refused which
    token and what in it."""
    ce_dir = harness.tmp_path / "ce-tokens"
    queue = {**arc_queue(token_ce, pilot_zip, "pull", python="true"), "ce_credentials": "token",
             "ce_token_profile": "ce", "pilot": "true", "n_queue_limit_worker": 10, "max_workers": 10}
    audience = f"https://localhost:{token_ce.port}"
    ce_token = ce_dir / f"https_localhost_{token_ce.port}"

    def submit(expected: str, **ce_settings) -> None:
        harness.write_config({"ARC_TOKENS": queue},
                             tokens=token_profiles(harness, fresh_issuer, pki, ce_dir=ce_dir, **ce_settings))
        result = harness.cli("submit", "--count", "2")
        assert result.returncode == 1, result.stdout + result.stderr
        lines = [line for line in result.stderr.splitlines() if "queue ARC_TOKENS: worker " in line]
        assert len(lines) == 2, result.stderr
        for line in lines:
            assert re.search(r"queue ARC_TOKENS: worker \d+: ARC CE https://localhost:\d+/arex refused the token ", line)
            assert token_ce.url in line and "(HTTP 403)" in line and expected in line, line
        print(f"\n{lines[0]}")
        assert_no_secrets(harness, fresh_issuer, result.stdout, result.stderr)

    # 1. another audience: the profile formats ARC audiences without the scheme (a site's typo)
    harness.write_config({"ARC_TOKENS": queue}, tokens=token_profiles(
        harness, fresh_issuer, pki, ce_dir=ce_dir, audience_formats={"arc-ce": "{host}:{port}"}))
    assert harness.cli("renew-proxy", "--no-mail").returncode == 0
    # harvester-cli cannot know what the CE expects; it says what the token holds
    submit(f"(aud localhost:{token_ce.port}, iss {fresh_issuer.url}): check that the CE trusts this issuer and "
           "expects this audience", audience_formats={"arc-ce": "{host}:{port}"})
    # 2. expired: renew-proxy did not run for a while
    ce_token.write_text(fresh_issuer.mint(aud=audience, lifetime=-600) + "\n")
    submit("the token expired")
    # 3. no compute.create: the issuer grants this client less than it asks for
    fresh_issuer.add_client(CLIENT_ID, CLIENT_SECRET, scopes="compute.read compute.modify compute.cancel")
    renewed = harness.cli_json("renew-proxy", "--no-mail", "--force")
    assert decode(ce_token.read_text().strip())["scope"] == "compute.read compute.modify compute.cancel", renewed
    submit("lacks compute.create")

    instance = harness.instance({"ARC_TOKENS": queue}, tokens=token_profiles(harness, fresh_issuer, pki, ce_dir=ce_dir))
    missed = rows(instance, workers)
    assert len(missed) == 6 and all(w.status == "missed" and token_ce.url in w.diag for w in missed)
    instance.close()


@pytest_arc
def test_arc_6_17_refuses_es256_tokens(harness, sim, token_ce, pilot_zip, pki, fresh_issuer):
    """A-REX 6.17 cannot read EC keys from a JWKS ("JWSE::ExtractPublicKey: key parsing error"), so it refuses an
    ES256-signed token that HTCondor accepts (below): an issuer for ARC-CEs must sign with RS256 (IAM's default).
    Kept as a test so that a newer A-REX that accepts them shows up here."""
    queue = {**arc_queue(token_ce, pilot_zip, "pull"), "ce_credentials": "token", "ce_token_profile": "ce",
             "pilot": "true"}
    ce_dir = harness.tmp_path / "ce-tokens"
    harness.write_config({"ARC_ES256": queue}, tokens=token_profiles(harness, fresh_issuer, pki, ce_dir=ce_dir))
    ce_dir.mkdir(mode=0o700)
    token = fresh_issuer.mint(aud=f"https://localhost:{token_ce.port}", alg="ES256")
    secret_file(ce_dir, f"https_localhost_{token_ce.port}", token)
    result = harness.cli_json("submit", "--count", "1")
    (failed,) = result["queues"][0]["failed"]
    assert "(HTTP 403)" in failed["error"] and "check that the CE trusts this issuer" in failed["error"]
    assert fresh_issuer.requests == []   # the token came from the file; the CE fetched the key itself
    assert_no_secrets(harness, fresh_issuer, json.dumps(result))


@pytest_arc
def test_arc_both_submits_with_the_token_and_delegates_the_proxy_for_data(harness, sim, token_ce, pilot_zip, pki,
                                                                         fresh_issuer):
    """ce_credentials = both: the CE admits the job because of the token (it maps no DN), and the job still gets
    the proxy as its delegated credential."""
    (panda_id,) = sim.add_jobs("ARC_BOTH", 1, jobPars='openssl x509 -in "$X509_USER_PROXY" -noout -issuer')
    queue = {**arc_queue(token_ce, pilot_zip, "push"), "ce_credentials": "both", "ce_token_profile": "ce"}
    tokens = token_profiles(harness, fresh_issuer, pki, ce_dir=harness.tmp_path / "ce-tokens")
    harness.write_config({"ARC_BOTH": queue}, tokens=tokens)
    assert harness.cli("renew-proxy", "--no-mail").returncode == 0
    instance = harness.instance({"ARC_BOTH": queue}, tokens=tokens)
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=150,
                what="push job finished with token submission and a delegated proxy")

    (w,) = rows(instance, workers)
    assert "CN = harvester-cli test user" in (Path(w.log_dir) / "pilot.out").read_text()   # the delegated proxy
    delegations = (harness.tmp_path / "work" / "arc" / "delegations.json").read_text()
    assert token_ce.url in delegations
    instance.close()


# -- HTCondor: a schedd with SCITOKENS, grid jobs with their CE's token ------------------------------------

@pytest.fixture(scope="session")
def scitokens_schedd(condor_pool, issuer, pki):
    """The pool's schedd also authenticates SCITOKENS from `issuer`: a host certificate naming this host (the
    client checks it against the host alias in the schedd's address), the issuer's CA for the JWKS fetch
    (read by the daemons at start, see htcondor-pool.sh), tokens of the test client mapped to the job owner,
    audience 127.0.0.1:9618. Reconfigured, not restarted (a restarted schedd waits for the master's back-off)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    directory = condor_pool.session_dir / "scitokens"
    directory.mkdir()
    give(directory, 0o755)
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key((pki.directory / "cakey.pem").read_bytes(), None)
    key = serialization.load_pem_private_key(pki.host_key.read_bytes(), None)
    names = sorted({socket.gethostname(), socket.gethostname().split(".")[0], socket.getfqdn(), "localhost"})
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]
                                                       + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "hostcert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    shutil.copyfile(pki.host_key, directory / "hostkey.pem")
    shutil.copyfile(pki.ca_file, directory / "ca.pem")
    shutil.copyfile(pki.ca_file, JOBDIR / ".token-issuer-ca.pem")
    # A quoted literal principal: a /regex/ with the issuer URL's slashes escaped did not match here.
    (directory / "mapfile").write_text(f'SCITOKENS "{issuer.url},{CLIENT_ID}" ctest\n')
    config = CHROOT / "etc" / "condor" / "config.d" / "99-zz-harvester-tokens"   # after 99-local-test
    # The server's list decides which method a client that offers several gets: SCITOKENS first, or a condor-C
    # job would come in by FS without its token (clients without a token still fall back to FS or CLAIMTOBE).
    config.write_text(f"""# harvester-cli token tests (removed at the end of the session)
SEC_DEFAULT_AUTHENTICATION_METHODS = SCITOKENS, FS, CLAIMTOBE
SCITOKENS_SERVER_AUDIENCE = 127.0.0.1:9618
CERTIFICATE_MAPFILE = {directory}/mapfile
AUTH_SSL_SERVER_CERTFILE = {directory}/hostcert.pem
AUTH_SSL_SERVER_KEYFILE = {directory}/hostkey.pem
AUTH_SSL_CLIENT_CAFILE = {directory}/ca.pem
# the C-GAHP (condor-C to a CE) offers the job's token first; other grid jobs still get in by FS
C_GAHP.SEC_CLIENT_AUTHENTICATION_METHODS = SCITOKENS, FS, CLAIMTOBE
C_GAHP_WORKER_THREAD.SEC_CLIENT_AUTHENTICATION_METHODS = SCITOKENS, FS, CLAIMTOBE
""")

    def reconfig():
        run = subprocess.run(["chroot", str(CHROOT), "condor_reconfig"], capture_output=True, text=True,
                             env=pool_env(), timeout=60)
        assert run.returncode == 0, run.stderr

    reconfig()
    yield directory
    config.unlink()
    reconfig()


def schedd_env(directory: Path) -> dict:
    """What a site's HTCondor client configuration says: trust the schedd's host certificate."""
    return {"_CONDOR_AUTH_SSL_CLIENT_CAFILE": str(directory / "ca.pem")}


def schedd_queue(htc: HTC, token_file: Path, **options) -> dict:
    return htc.queue(pilot="sleep 30", schedd_token_file=str(token_file), extra_attributes={"hold": "true"},
                     queue={"max_workers": 10}, **options)


def schedd_token(harness, issuer, pki, audience: str) -> dict:
    tmp = harness.tmp_path
    token = tmp / "schedd-tokens" / "schedd.token"
    return {"schedd": {"file": str(token), "endpoint": issuer.token_endpoint, "client_id": CLIENT_ID,
                       "client_secret_file": str(secret_file(tmp, "ce.secret", CLIENT_SECRET)),
                       # HTCondor authorizes each command by the token's scopes: a submission needs compute.read
                       # (READ) besides compute.create (WRITE); with compute.create alone the schedd says DENIED
                       "audience": audience, "scope": COMPUTE_SCOPES, "ca": str(pki.ca_file)}}


pytest_htcondor = pytest.mark.htcondor


@pytest_htcondor
def test_remote_submission_authenticates_to_the_schedd_with_the_token(htc, scitokens_schedd, fresh_issuer, pki):
    tokens = schedd_token(htc.harness, fresh_issuer, pki, "127.0.0.1:9618")
    token_file = Path(tokens["schedd"]["file"])
    htc.harness.write_config({"HTC_TOKEN": schedd_queue(htc, token_file)}, **{**htc.overrides, "tokens": tokens})
    renewed = htc.harness.cli("renew-proxy", "--no-mail")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    result = htc.harness.cli("--json", "submit", "--count", "2", env=schedd_env(scitokens_schedd))
    assert result.returncode == 0, result.stdout + result.stderr
    ads = htc.jobs(projection=["Owner", "AuthTokenIssuer", "AuthTokenSubject", "AuthTokenScopes", "harvesterWorkerID"])
    assert len(ads) == 2
    for ad in ads:   # the schedd verified the token and recorded who it came from
        assert ad["AuthTokenIssuer"] == fresh_issuer.url and ad["AuthTokenSubject"] == CLIENT_ID
        assert ad["Owner"] == "ctest" and ad["AuthTokenScopes"] == COMPUTE_SCOPES.replace(" ", ",")
    assert_no_secrets(htc.harness, fresh_issuer, result.stdout, result.stderr, renewed.stdout)


@pytest_htcondor
def test_schedd_refuses_a_token_for_another_audience(htc, scitokens_schedd, fresh_issuer, pki):
    tokens = schedd_token(htc.harness, fresh_issuer, pki, "elsewhere.example.org:9618")
    token_file = Path(tokens["schedd"]["file"])
    htc.harness.write_config({"HTC_TOKEN": schedd_queue(htc, token_file)}, **{**htc.overrides, "tokens": tokens})
    assert htc.harness.cli("renew-proxy", "--no-mail").returncode == 0
    result = htc.harness.cli("submit", "--count", "1", env=schedd_env(scitokens_schedd))
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "queue HTC_TOKEN: worker " in line]
    assert f"schedd {SCHEDD} refused the token {token_file}" in line
    assert "its audience elsewhere.example.org:9618 is not this schedd's 127.0.0.1:9618" in line
    assert "Failed to authenticate using SCITOKENS" in line
    print(f"\n{line}")
    assert htc.jobs() == []
    log = (CHROOT / "var" / "log" / "condor" / "SchedLog").read_text(errors="replace")
    assert "'aud' claim verification failed" in log   # the schedd's own verdict


@pytest_htcondor
def test_grid_jobs_carry_the_token_of_their_own_ce(htc, scitokens_schedd, fresh_issuer, pki):
    """The CEs of a CRIC file (two ACTIVE HTCondor-CEs, one written without a port, and a DISABLED one): one
    token each for the active ones, asked once, with its CE's audience; each grid job's scitokens_file is its
    CE's token; ce_credentials = token sends no proxy. The jobs are held: this is about what they carry."""
    cric = htc.harness.tmp_path / "cric.json"
    cric.write_text(json.dumps({"HTC_GRID_TOKENS": {"queues": [
        {"ce_endpoint": COLLECTOR, "ce_flavour": "HTCondor-CE", "ce_state": "ACTIVE"},
        {"ce_endpoint": "CE2.example.org", "ce_flavour": "htcondor-ce", "ce_state": "ACTIVE"},
        {"ce_endpoint": "gone.example.org:9619", "ce_flavour": "htcondor-ce", "ce_state": "DISABLED"}]}}))
    queue = htc.queue(pilot="sleep 30", cric_file=str(cric), extra_attributes={"hold": "true"},
                      queue={"ce_credentials": "token", "ce_token_profile": "ce", "max_workers": 10})
    ce_dir = htc.harness.tmp_path / "ce-tokens"
    tokens = token_profiles(htc.harness, fresh_issuer, pki, ce_dir=ce_dir)
    htc.harness.write_config({"HTC_GRID_TOKENS": queue}, **{**htc.overrides, "tokens": tokens})
    renewed = htc.harness.cli_json("renew-proxy", "--no-mail", "--profile", "ce")
    assert sorted(p["audience"] for p in renewed["profiles"]) == ["127.0.0.1:9618", "ce2.example.org:9619"]
    assert sorted(r["form"]["audience"] for r in fresh_issuer.requests) == ["127.0.0.1:9618", "ce2.example.org:9619"]
    again = htc.harness.cli_json("renew-proxy", "--no-mail", "--profile", "ce")
    assert [p["action"] for p in again["profiles"]] == ["ok", "ok"] and len(fresh_issuer.requests) == 2
    result = htc.harness.cli("--json", "submit", "--count", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    def four_jobs():
        ads = htc.jobs(projection=["harvesterCE", "ScitokensFile", "x509userproxy", "GridResource"])
        return ads if len(ads) == 4 else None

    ads = wait_until(four_jobs, timeout=30, what="four grid jobs in the schedd")
    for ad in ads:
        carried = decode(Path(ad["ScitokensFile"]).read_text().strip())
        expected = "127.0.0.1:9618" if ad["harvesterCE"] == COLLECTOR else "ce2.example.org:9619"
        assert carried["aud"] == expected and carried["iss"] == fresh_issuer.url
        assert ad.get("x509userproxy") is None
    status = htc.harness.cli_json("status")
    assert {t["audience"] for t in status["tokens"]} == {"127.0.0.1:9618", "ce2.example.org:9619",
                                                         tokens["pilot"]["audience"]}


@pytest_htcondor
def test_schedd_verifies_es256_tokens(htc, scitokens_schedd, fresh_issuer, pki):
    """SciTokens' own default: an ES256-signed token (P-256 key in the JWKS) authenticates to the schedd."""
    tokens = schedd_token(htc.harness, fresh_issuer, pki, "127.0.0.1:9618")
    token_file = Path(tokens["schedd"]["file"])
    htc.harness.write_config({"HTC_TOKEN": schedd_queue(htc, token_file)}, **{**htc.overrides, "tokens": tokens})
    token_file.parent.mkdir(mode=0o700)
    secret_file(token_file.parent, token_file.name, fresh_issuer.mint(aud="127.0.0.1:9618", alg="ES256"))
    result = htc.harness.cli("--json", "submit", "--count", "1", env=schedd_env(scitokens_schedd))
    assert result.returncode == 0, result.stdout + result.stderr
    (ad,) = htc.jobs(projection=["AuthTokenIssuer", "AuthTokenSubject"])
    assert ad["AuthTokenIssuer"] == fresh_issuer.url and ad["AuthTokenSubject"] == CLIENT_ID


@pytest_htcondor
def test_condor_c_job_authenticates_to_its_ce_with_that_ces_token(htc, sim, scitokens_schedd, fresh_issuer, pki):
    """Grid universe for real: the pool's schedd is the HTCondor-CE, the C-GAHP offers SCITOKENS first, and the
    job's copy at the CE records the token it came in with (its own CE's, audience 127.0.0.1:9618)."""
    from harvester_cli.site import renewal

    (panda_id,) = sim.add_jobs("HTC_CE_TOKEN", 1, jobPars="echo through the CE on a token")
    tokens = token_profiles(htc.harness, fresh_issuer, pki, ce_dir=htc.harness.tmp_path / "ce-tokens")
    queue = htc.queue("push", ces=[{"endpoint": COLLECTOR, "name": SCHEDD}],
                      queue={"ce_credentials": "both", "ce_token_profile": "ce"})
    instance = htc.instance({"HTC_CE_TOKEN": queue}, tokens=tokens)
    renewed = renewal.renew(instance.config, ["ce"], mail=False)
    assert [(r.audience, r.action) for r in renewed.results] == [("127.0.0.1:9618", "renewed")]
    cycle_until(instance, lambda: sim.job_status(panda_id) == "finished", timeout=150,
                what="push job finished through condor-C with the CE's token")
    (w,) = rows(instance, workers)
    assert w.computing_element == COLLECTOR and w.status == "finished"
    at_ce = f'harvesterID == "{htc.harness.harvester_id}" && SubmitterGlobalJobId =!= undefined'
    projection = ["AuthTokenSubject", "AuthTokenIssuer", "Owner", "SubmitterGlobalJobId"]
    schedd = htc.pool.schedd()
    remote = list(schedd.query(at_ce, projection)) + list(schedd.history(at_ce, projection))
    assert remote and all(ad.get("AuthTokenSubject") == CLIENT_ID and ad.get("AuthTokenIssuer") == fresh_issuer.url
                          for ad in remote), [dict(ad) for ad in remote]
    instance.close()
