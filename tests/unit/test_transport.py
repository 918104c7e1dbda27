"""The transport (harvester_cli/backends/transport.py) without a daemon: what ssh's messages mean, the remote
command line under a real shell, files put, got and removed on this host, and the SSH transport whole against
a stand-in `ssh` that runs the command here (what the real sshd does is tests/integration/ssh's). The Slurm
options of a login node, and what `config check` says of them."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harvester_cli import config
from harvester_cli.backends import transport
from harvester_cli.backends.transport import LocalTransport, SSHSettings, StagedFile
from harvester_cli.config import ssh_certificate
from harvester_cli.errors import ConfigError

# What OpenSSH 9.2 prints (captured against Debian's sshd).
CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
Offending ED25519 key in /etc/harvester-cli/known_hosts:1
Host key for 10.97.0.11 has changed and you have requested strict checking.
Host key verification failed.
"""
UNKNOWN = ("No ED25519 host key is known for 10.97.0.11 and you have requested strict checking.\n"
           "Host key verification failed.\n")
REFUSED = "hclogin@10.97.0.11: Permission denied (publickey).\n"
DOWN = "ssh: connect to host 10.97.0.11 port 22: Connection refused\n"
TIMEOUT = "ssh: connect to host 10.97.0.99 port 22: Connection timed out\n"
DNS = "ssh: Could not resolve hostname nosuchhost.invalid: Name or service not known\n"


@pytest.mark.parametrize("stderr,kind,line", [
    (CHANGED, "host key changed", "Host key verification failed."),
    (UNKNOWN, "host key unknown", "Host key verification failed."),
    (REFUSED, "key refused", "hclogin@10.97.0.11: Permission denied (publickey)."),
    (DOWN, "down", DOWN.strip()), (TIMEOUT, "down", TIMEOUT.strip()), (DNS, "down", DNS.strip()),
    ("", "down", "ssh exited 255 without a message"),
])
def test_what_ssh_says_decides_between_a_configuration_problem_and_a_node_that_is_down(stderr, kind, line):
    assert transport.classify(stderr) == (kind, line)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_remote_command_carries_every_argument_and_drops_the_callers_slurm_settings(shell):
    tricky = ["it's", "$HOME", "a b", "*", "--job-name=hc:5", "x\"y", "\\n", ""]
    command = transport.remote_command(["printf", "[%s]", *tricky], {"SLURM_CONF": "/etc/slurm/site.conf"},
                                       ("SLURM_", "SQUEUE_"), ("SLURM_CONF",))
    env = {"PATH": os.environ["PATH"], "SQUEUE_FORMAT": "%i", "SLURM_JOB_ID": "7", "KEEP": "1"}
    out = subprocess.run([shell, "-c", command], capture_output=True, text=True, env=env, check=True).stdout
    assert out == "".join(f"[{a}]" for a in tricky)
    dump = transport.remote_command(["env"], {"SLURM_CONF": "/c"}, ("SLURM_", "SQUEUE_"), ("SLURM_CONF",))
    seen = subprocess.run([shell, "-c", dump], capture_output=True, text=True, env=env, check=True).stdout
    names = {line.split("=", 1)[0] for line in seen.splitlines()}
    assert "SLURM_CONF=/c" in seen.splitlines() and "KEEP" in names and not {"SQUEUE_FORMAT", "SLURM_JOB_ID"} & names


def files() -> list[StagedFile]:
    return [StagedFile("12", directory=True), StagedFile("12/logs", directory=True),
            StagedFile("12/pandaJobData.out", b'{"secret": 1}', 0o600),
            StagedFile("12/harvester-worker.sh", b"#!/bin/sh\necho hi\n", 0o700),
            StagedFile("arrays/12/0", link="/somewhere/12/logs"),
            StagedFile("credentials/x509_user_proxy", b"PROXY", 0o600, replace=True)]


def check_put(root: Path) -> None:
    mode = lambda p: stat.S_IMODE(os.lstat(root / p).st_mode)
    assert mode("12") == 0o700 and mode("12/logs") == 0o700 and mode("credentials") == 0o700
    assert mode("12/pandaJobData.out") == 0o600 and mode("12/harvester-worker.sh") == 0o700
    assert os.readlink(root / "arrays/12/0") == "/somewhere/12/logs"
    assert (root / "credentials/x509_user_proxy").read_bytes() == b"PROXY"


def check_get_and_remove(t, root: Path, tmp_path: Path) -> None:
    (root / "12/logs/pilot.out").write_text("out")
    (root / "12/heartbeat.json").write_text("{}")
    (root / "12/big.log").write_text("x" * 100)
    os.symlink("/etc/passwd", root / "12/logs/stolen")   # a pilot's link never brings a file of the login node back
    os.symlink("/etc/passwd", root / "12/jobReport.json")
    local = tmp_path / "local"
    got = t.get(str(root), [("12/logs", local), ("12/heartbeat.json", local / "heartbeat.json"),
                            ("12/jobReport.json", local / "jobReport.json"), ("12/big.log", local / "big.log"),
                            ("13/logs", local)], timeout=10, max_bytes=50)
    assert sorted(p.name for p in got) == ["heartbeat.json", "pilot.out"]
    assert sorted(p.name for p in local.iterdir()) == ["heartbeat.json", "pilot.out"]
    t.remove(str(root), ["12", "arrays/12/0"], prune=["arrays/12"], timeout=10)
    assert sorted(p.name for p in root.iterdir()) == ["arrays", "credentials"] and not (root / "arrays/12").exists()


def test_local_transport_puts_gets_and_removes_files(tmp_path):
    t, root = LocalTransport(), tmp_path / "work" / "Q"
    t.put(str(root), files(), timeout=10)
    check_put(root)
    t.put(str(root), [StagedFile("credentials/x509_user_proxy", b"RENEWED", 0o600, replace=True)], timeout=10)
    assert (root / "credentials/x509_user_proxy").read_bytes() == b"RENEWED"
    check_get_and_remove(t, root, tmp_path)
    with pytest.raises(ValueError):
        t.put(str(root), [StagedFile("../escape", b"x")], timeout=10)


# -- the SSH transport against a stand-in ssh ------------------------------------------------------------

FAKE_SSH = r'''#!{python}
"""A stand-in for OpenSSH's client: a master is a file at the ControlPath, a command runs here with sh -c.
FAKE_SSH_NODES: node=behaviour,... (ok, down, changed, refused); every call is logged to FAKE_SSH_LOG."""
import os, subprocess, sys
args = sys.argv[1:]
options, control, rest = {{}}, None, []
i = 0
while i < len(args):
    if args[i] == "-o":
        key, _, value = args[i + 1].partition("="); options[key] = value; i += 2
    elif args[i] in ("-F", "-O"):
        options[args[i]] = args[i + 1]; i += 2
    elif args[i] == "--":
        rest = args[i + 1:]; break
    else:
        i += 1
node, command = rest[0], rest[1:]
socket = options["ControlPath"].replace("%C", "sock-" + node)
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(" ".join(["-O " + options["-O"]] if "-O" in options else [options.get("ControlMaster", "")]) + " " + node + "\n")
behaviour = dict(p.split("=") for p in os.environ.get("FAKE_SSH_NODES", "").split(",") if p).get(node, "ok")
if "-O" in options:
    if options["-O"] == "exit" and os.path.exists(socket):
        os.unlink(socket)
    sys.exit(0 if os.path.exists(socket) or options["-O"] == "exit" else 255)
if options.get("ControlMaster") == "yes":
    messages = {{"down": "ssh: connect to host %s port 22: Connection refused" % node,
                "changed": "@@@@\nHost key for %s has changed and you have requested strict checking.\nHost key verification failed." % node,
                "refused": "hclogin@%s: Permission denied (publickey)." % node}}
    if behaviour != "ok":
        print(messages[behaviour], file=sys.stderr); sys.exit(255)
    open(socket, "w").close(); sys.exit(0)
if behaviour == "drop":
    os.unlink(socket); print("Connection to %s closed by remote host." % node, file=sys.stderr); sys.exit(255)
sys.exit(subprocess.run(["sh", "-c", command[0]]).returncode)
'''


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable))
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(tmp_path / "ssh.log"))
    (tmp_path / "ssh.log").write_text("")
    yield tmp_path / "ssh.log"
    transport.close_all()


def settings(tmp_path, *nodes: str) -> SSHSettings:
    return SSHSettings(nodes=nodes or ("login1",), user="hclogin", key=tmp_path / "id", known_hosts=tmp_path / "kh",
                       connect_timeout=2, control_persist=5)


def test_ssh_transport_opens_one_connection_per_run_and_moves_files_through_it(tmp_path, fake_ssh):
    t = transport.ssh(settings(tmp_path))
    assert transport.ssh(settings(tmp_path)) is t   # the queues that reach the same nodes share it
    root = tmp_path / "remote" / "Q"
    t.put(str(root), files(), timeout=10)
    check_put(root)
    result = t.run(["printf", "%s", "it's $HOME"], timeout=10, set_env={"SLURM_CONF": "/c"}, drop_env=("SLURM_",),
                   keep_env=("SLURM_CONF",))
    assert result.returncode == 0 and result.stdout == "it's $HOME"
    check_get_and_remove(t, root, tmp_path)
    log = fake_ssh.read_text().splitlines()
    assert log[0] == "yes login1" and log.count("yes login1") == 1   # one master, every command its session
    assert t.where() == "login1" and [(c.endpoint, c.answered) for c in t.contacts()] == [("login1", True)]
    t.close()
    assert fake_ssh.read_text().splitlines()[-1] == "-O exit login1"


def test_login_nodes_are_tried_in_order_and_none_answering_is_one_line(tmp_path, fake_ssh, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_NODES", "login1=down")
    t = transport.ssh(settings(tmp_path, "login1", "login2"))
    assert t.run(["true"], timeout=10).returncode == 0 and t.where() == "login2"
    assert [(c.endpoint, c.answered) for c in t.contacts()] == [("login1", False), ("login2", True)]
    transport.close_all()
    monkeypatch.setenv("FAKE_SSH_NODES", "login1=down,login2=down")
    t = transport.ssh(settings(tmp_path, "login1", "login2"))
    with pytest.raises(transport.LoginNodesDown) as caught:
        t.run(["true"], timeout=10)
    text = str(caught.value)
    assert "\n" not in text and "login1: ssh: connect to host login1 port 22: Connection refused" in text
    assert "login2" in text and text.endswith("the next run tries again")
    with pytest.raises(transport.LoginNodesDown):   # the rest of the run does not wait on them again
        t.run(["true"], timeout=10)
    assert sum(line.startswith("yes") for line in fake_ssh.read_text().splitlines()) == 4   # 2 per run, no more


@pytest.mark.parametrize("behaviour,needle", [("changed", "its host key does not match the one in"),
                                              ("refused", "refused the key")])
def test_a_host_key_or_key_problem_is_a_configuration_error_and_stops_at_that_node(tmp_path, fake_ssh, monkeypatch,
                                                                                  behaviour, needle):
    monkeypatch.setenv("FAKE_SSH_NODES", f"login1={behaviour}")
    t = transport.ssh(settings(tmp_path, "login1", "login2"))
    with pytest.raises(transport.SSHConfigError) as caught:
        t.run(["true"], timeout=10)
    assert caught.value.exit_code == 2 and needle in str(caught.value) and "\n" not in str(caught.value)
    assert "login2" not in fake_ssh.read_text()   # another node would only hide it


def certified(tmp_path: Path, key: Path, validity: str | None) -> Path:
    """A key pair at `key`, with a certificate of a CA of its own beside it (valid for `validity`, ssh-keygen -V)."""
    ca = tmp_path / "user_ca"
    if not ca.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "harvester", "-n", "hclogin",
                    *(["-V", validity] if validity else []), f"{key}.pub"], check=True)
    return ssh_certificate.certificate_of(key)


def test_a_certificates_validity_is_read_from_it(tmp_path):
    key = tmp_path / "id"
    expired = ssh_certificate.validity(certified(tmp_path, key, "20200101:20200102"))
    assert expired == ssh_certificate.Validity(1577836800, 1577923200)
    assert expired.problem() == "expired at 2020-01-02 00:00:00 UTC" and expired.problem(1577836900) is None
    assert expired.problem(1577836000) == "is valid only from 2020-01-01 00:00:00 UTC"
    forever = ssh_certificate.validity(certified(tmp_path, key, None))
    assert forever == ssh_certificate.Validity(0, None) and forever.problem() is None
    for not_one in (Path(f"{key}.pub"), tmp_path / "missing", key):   # a plain public key, nothing, a private key
        assert ssh_certificate.validity(not_one) is None
    blob = (tmp_path / "id-cert.pub").read_text().split()[1]
    assert ssh_certificate.parse(base64.b64decode(blob)[:60]) is None   # cut short


@pytest.mark.parametrize("validity,says,not_said", [
    (None, "not in its authorized_keys, or the wrong user", "certificate"),
    ("20200101:20200102", "its certificate {cert} expired at 2020-01-02 00:00:00 UTC", "authorized_keys"),
    ("-5m:+1h", "nor its certificate's CA or principal trusted there", "expired"),
])
def test_a_refused_key_says_when_its_certificate_expired(tmp_path, fake_ssh, monkeypatch, validity, says, not_said):
    if validity:
        certified(tmp_path, tmp_path / "id", validity)
    monkeypatch.setenv("FAKE_SSH_NODES", "login1=refused")
    with pytest.raises(transport.SSHConfigError) as caught:
        transport.ssh(settings(tmp_path)).run(["true"], timeout=10)
    text = str(caught.value)
    assert f"refused the key {tmp_path / 'id'} for user hclogin (ssh: hclogin@login1: Permission denied" in text
    assert says.format(cert=tmp_path / "id-cert.pub") in text and not_said not in text


def test_a_connection_lost_during_a_command_is_said_once_and_ends_the_runs_calls(tmp_path, fake_ssh, monkeypatch):
    t = transport.ssh(settings(tmp_path))
    assert t.run(["true"], timeout=10).returncode == 0
    monkeypatch.setenv("FAKE_SSH_NODES", "login1=drop")
    with pytest.raises(transport.ConnectionLost, match="lost during sbatch .*its outcome is unknown"):
        t.run(["sbatch", "x"], timeout=10)
    monkeypatch.setenv("FAKE_SSH_NODES", "")
    with pytest.raises(transport.ConnectionLost, match="^skipped: "):
        t.run(["squeue"], timeout=10)


def test_a_command_over_its_timeout(tmp_path, fake_ssh):
    t = transport.ssh(settings(tmp_path))
    with pytest.raises(transport.CommandTimeout, match="sleep on login node login1 did not answer within 0.5 s"):
        t.run(["sleep", "5"], timeout=0.5)


def test_submit_through_a_login_node_with_a_changed_host_key_exits_2_in_one_line(tmp_path, fake_ssh, harness):
    key, known = tmp_path / "id", tmp_path / "known_hosts"
    key.write_text("key")
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host")], check=True)
    known.write_text("login1 " + " ".join((tmp_path / "host.pub").read_text().split()[:2]) + "\n")
    options = {"login_nodes": ["login1"], "ssh_key": str(key), "known_hosts": str(known),
               "work_dir": str(tmp_path / "remote")}
    harness.write_config({"Q": {"mode": "pull", "backend": "slurm", "pilot": "true", "backend_options": options}})
    env = {"PATH": os.environ["PATH"], "FAKE_SSH_LOG": str(fake_ssh), "FAKE_SSH_NODES": "login1=changed"}
    result = harness.cli("submit", "--queue", "Q", "--count", "1", env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and " ERROR " in lines[0] and "login node login1: its host key does not match" in lines[0]
    status = json.loads(harness.cli("--json", "status", env=env).stdout)
    (node,) = status["login_nodes"]
    assert node["node"] == "login1" and not node["answering"] and "Host key verification failed" in node["problem"]


# -- the options of a login node, and config check ----------------------------------------------------------

def slurm_config(tmp_path, **options) -> dict:
    return {"harvester_id": "hc", "work_dir": str(tmp_path / "work"), "panda": {"url": "https://panda.example.org/api/v1",
                                                                               "proxy": str(tmp_path / "proxy")},
            "queues": {"Q": {"mode": "pull", "backend": "slurm", "pilot": "true", "backend_options": options}}}


@pytest.mark.parametrize("options,message", [
    ({"login_nodes": ["login1"], "known_hosts": "/kh", "work_dir": "/w"}, "ssh_key: login_nodes need ssh_key"),
    ({"login_nodes": ["login1"], "ssh_key": "/k", "work_dir": "/w"}, "known_hosts: login_nodes need known_hosts"),
    ({"login_nodes": ["login1"], "ssh_key": "/k", "known_hosts": "/kh"}, "work_dir: login_nodes need work_dir"),
    ({"login_nodes": ["-oProxyCommand=x"], "ssh_key": "/k", "known_hosts": "/kh", "work_dir": "/w"},
     "login_nodes: '-oProxyCommand=x' is not a host name"),
    ({"login_nodes": ["u@login1"], "ssh_key": "/k", "known_hosts": "/kh", "work_dir": "/w"},
     "login_nodes: 'u@login1' is not a host name"),
    ({"login_nodes": ["a", "a"], "ssh_key": "/k", "known_hosts": "/kh", "work_dir": "/w"}, "listed twice"),
    ({"login_nodes": ["a"], "ssh_key": "/k", "known_hosts": "/kh", "work_dir": "/w", "ssh_port": 0},
     "ssh_port: must be at least 1"),
])
def test_login_node_options_are_checked_in_one_line(tmp_path, options, message):
    with pytest.raises(ConfigError) as caught:
        config.parse(slurm_config(tmp_path, **options), "cfg.toml", Path("/"))
    assert "[queues.Q.backend_options] " in str(caught.value) and message in str(caught.value)


def test_config_check_looks_at_the_key_and_the_known_hosts_here_not_at_the_login_nodes_paths(tmp_path):
    key, known = tmp_path / "id", tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o644)
    known.write_text("login1 " + " ".join(Path(f"{key}.pub").read_text().split()[:2]) + "\n")
    (tmp_path / "proxy").write_text("p")
    (tmp_path / "proxy").chmod(0o600)
    cfg = config.parse(slurm_config(tmp_path, login_nodes=["login1", "login2"], ssh_key=str(key), known_hosts=str(known),
                                    work_dir="/scratch/on/the/cluster", slurm_conf="/etc/slurm/cluster.conf"),
                       "cfg.toml", tmp_path)
    problems = config.environment_problems(cfg)
    assert any(f"ssh_key: {key} is readable by others (mode 0644): chmod 600" in p for p in problems)
    assert any("known_hosts: " in p and "has no key for login node login2" in p for p in problems)
    assert not any("login1" in p for p in problems)
    assert not any("/scratch/on/the/cluster" in p or "cluster.conf" in p for p in problems), problems
    key.chmod(0o600)
    known.unlink()
    problems = config.environment_problems(cfg)
    assert any(f"known_hosts: {known}: No such file or directory" in p for p in problems)
    assert not any("ssh_key" in p for p in problems)
    certificate = certified(tmp_path, key, "20200101:20200102")
    assert any(f"ssh_key: its certificate {certificate} expired at 2020-01-02 00:00:00 UTC: the login nodes refuse"
               in p for p in config.environment_problems(cfg, lifetimes=True))
    assert not any("ssh_key" in p for p in config.environment_problems(cfg))   # a run's queue says it, not the run
    certified(tmp_path, key, "-5m:+1h")
    assert not any("ssh_key" in p for p in config.environment_problems(cfg, lifetimes=True))
