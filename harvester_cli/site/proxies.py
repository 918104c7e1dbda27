"""Proxies: inspect, renew from an ordered list of certificates, verify (APF's authmanager).

A proxy profile ([proxies.NAME]) keeps one proxy file alive. A run reads the file's certificate chain (with
`cryptography`) and, with VOMS, the attribute's lifetime and FQANs (with the tool's info command), and renews
when less than `min_lifetime` is left. Renewal tries the profile's certificates in order: one that is
expired, has a key readable by others, or makes the tool fail is skipped and reported, and the next is
tried. Each new proxy is written by the tool into a private temporary directory beside the target, verified
(chain, key, identity, lifetime, FQAN) and only then moved into place with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harvester_cli.config import CertificateConfig, ProxyProfile
from harvester_cli.site.alerts import Problem
from harvester_cli.site.credentials import (
    Attempt,
    CredentialError,
    ProfileResult,
    duration,
)
from harvester_cli.site.logs import redact
from harvester_cli.site.secretfiles import (
    SecretFileError,
    check_private,
    install_private,
    locked,
    read_secret_file,
    write_private,
)

log = logging.getLogger(__name__)

PROXY_CERT_INFO = "1.3.6.1.5.5.7.1.14"
PROXY_CERT_INFO_GT3 = "1.3.6.1.4.1.3536.1.222"
# ProxyCertInfo with policy id-ppl-inheritAll: SEQUENCE { SEQUENCE { OID 1.3.6.1.5.5.7.21.1 } }
_INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")

INSTALL_HINT = {"voms-proxy-init": "Debian package voms-clients", "voms-proxy-info": "Debian package voms-clients",
                "arcproxy": "Debian package nordugrid-arc-client"}


@dataclass
class ProxyInfo:
    """What a proxy file holds. `problem` says why it cannot be used at all (missing, unreadable, no key)."""

    path: Path
    exists: bool = False
    identity: str | None = None         # DN of the end-entity (user) certificate
    not_after: float | None = None      # epoch: the earliest expiry in the chain
    time_left: float | None = None      # seconds, negative when expired
    voms_time_left: float | None = None
    fqans: list[str] = field(default_factory=list)
    problem: str | None = None


def dn(name) -> str:
    """An X.509 name in the OpenSSL one-line form grid tools print: /DC=org/DC=example/CN=user."""
    parts = []
    for rdn in name.rdns:
        for attribute in rdn:
            parts.append(f"{attribute.rfc4514_attribute_name}={attribute.value}")
    return "/" + "/".join(parts)


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _is_proxy(cert) -> bool:
    return any(e.oid.dotted_string in (PROXY_CERT_INFO, PROXY_CERT_INFO_GT3) for e in cert.extensions)


def _not_after(cert) -> float:
    return cert.not_valid_after_utc.timestamp()


_NOISE = ("Function:", "Your proxy is valid", "Creating proxy", "Your identity:", "Cannot open file", "Proxy path:",
          "No policy language", "Contacting ")
_ERROR = re.compile(r"(?i)\b(error|failed|failure|not known|expired|denied|refused|invalid|wrong|bad)\b")


def _tool_message(stderr: str, stdout: str = "") -> str:
    """The tool's most telling line (not its key-generation dots nor its banner), redacted, <= 200 characters:
    the first line starting with ERROR, else the last line naming an error, else the last line."""
    def meaningful(text: str) -> list[str]:
        lines = (l.strip() for l in text.splitlines())
        return [l for l in lines if l and l.strip(".+*o ") and not l.startswith(_NOISE) and ".rnd" not in l]

    lines = meaningful(stderr) + meaningful(stdout)
    leading = [l for l in lines if l.upper().startswith("ERROR")]
    named = [l for l in lines if _ERROR.search(l)]
    text = leading[0] if leading else named[-1] if named else lines[-1] if lines else "no output"
    return redact(text)[:200]


def _tool_failure(tool: str, result: subprocess.CompletedProcess) -> CredentialError:
    what = f"{tool} exited {result.returncode}" if result.returncode else f"{tool} made no proxy"
    return CredentialError(f"{what}: {_tool_message(result.stderr, result.stdout)}")


def _find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINT.get(name)
        raise CredentialError(f"{name} not found on PATH" + (f" (install {hint})" if hint else ""))
    return path


# -- inspecting a proxy ------------------------------------------------------------------------


def _load_pem(data: bytes):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    certs = x509.load_pem_x509_certificates(data)
    key = None
    start = data.find(b"-----BEGIN")
    while start != -1:
        end_marker = data.find(b"-----END", start)
        end = data.find(b"-----", end_marker + 8)
        block = data[start:end + 5]
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            key = load_pem_private_key(block, None)
            break
        start = data.find(b"-----BEGIN", end + 5)
    return certs, key


def _public_bytes(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def inspect_proxy(profile: ProxyProfile, path: Path | None = None, now: float | None = None,
                  voms_info: bool = True) -> ProxyInfo:
    """Read a proxy file: chain and key with cryptography; with VOMS, the attribute's lifetime and FQANs
    with the profile tool's info command."""
    path = path or profile.file
    now = time.time() if now is None else now
    info = ProxyInfo(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        info.problem = "no proxy file"
        return info
    except OSError as exc:
        info.problem = f"cannot read: {exc.strerror}"
        return info
    info.exists = True
    if b"-----BEGIN CERTIFICATE-----" not in data:   # said without loading cryptography (status stays quick)
        info.problem = "not a proxy: an empty file" if not data.strip() else "not a proxy: no PEM certificate in it"
        return info
    try:
        certs, key = _load_pem(data)
    except Exception as exc:   # cryptography raises ValueError and friends for broken PEM
        info.problem = f"not a proxy: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return info
    if not certs:
        info.problem = "not a proxy: no certificate"
        return info
    if key is None:
        info.problem = "not a proxy: no private key"
        return info
    if _public_bytes(key.public_key()) != _public_bytes(certs[0].public_key()):
        info.problem = "not a proxy: the private key does not match the certificate"
        return info
    eec = next((c for c in certs if not _is_proxy(c)), certs[-1])
    info.identity = dn(eec.subject)
    info.not_after = min(_not_after(c) for c in certs)
    info.time_left = info.not_after - now
    if profile.voms and voms_info:
        try:
            info.voms_time_left, info.fqans = voms_attributes(profile, path)
        except CredentialError as exc:
            info.problem = str(exc)
    return info


def _tool_env(profile: ProxyProfile) -> dict[str, str]:
    env = dict(os.environ)
    if profile.ca:
        env["X509_CERT_DIR"] = str(profile.ca)
    if profile.vomsdir:
        env["X509_VOMS_DIR"] = str(profile.vomsdir)
    if profile.vomses:
        env["VOMS_USERCONF"] = str(profile.vomses)
    return env


def _run(args: list[str], profile: ProxyProfile, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, input=stdin if stdin is not None else "", capture_output=True, text=True,
                              env=_tool_env(profile), timeout=profile.timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise CredentialError(f"{Path(args[0]).name} did not finish within {profile.timeout:g} s") from None
    except OSError as exc:
        raise CredentialError(f"{Path(args[0]).name}: cannot run: {exc.strerror}") from None


def _hms(text: str) -> float:
    hours, minutes, seconds = (int(x) for x in text.strip().split(":"))
    return hours * 3600 + minutes * 60 + seconds


def voms_attributes(profile: ProxyProfile, path: Path) -> tuple[float | None, list[str]]:
    """(seconds the VOMS attribute has left, FQANs) of a proxy, as the profile's tool family reads them."""
    if profile.tool == "arcproxy":
        tool = _find_tool("arcproxy")
        args = [tool, "-I", "-P", str(path)] + (["-T", str(profile.ca)] if profile.ca else []) \
            + (["-s", str(profile.vomsdir)] if profile.vomsdir else [])
        result = _run(args, profile)
        if result.returncode != 0:
            raise CredentialError(f"arcproxy -I: {_tool_message(result.stderr, result.stdout)}")
        fqans = [l.split(":", 1)[1].strip() for l in result.stdout.splitlines()
                 if l.strip().startswith("attribute") and ":" in l]
        left = _run([tool, "-i", "vomsACvalidityLeft", "-P", str(path)], profile)
        numbers = [int(x) for x in left.stdout.replace("|", " ").split() if x.isdigit()]
        return (float(min(numbers)) if numbers else None), [f for f in fqans if f.startswith("/")]
    tool = _find_tool("voms-proxy-info")
    result = _run([tool, "-file", str(path), "-all"], profile)
    if result.returncode != 0 and "=== VO" not in result.stdout:
        raise CredentialError(f"voms-proxy-info: {_tool_message(result.stderr, result.stdout)}")
    fqans: list[str] = []
    lefts: list[float] = []
    in_vo = False
    for line in result.stdout.splitlines():
        if line.startswith("=== VO"):
            in_vo = True
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if in_vo and key == "attribute" and value.strip().startswith("/"):
            fqans.append(value.strip())
        elif in_vo and key == "timeleft":
            try:
                lefts.append(_hms(value))
            except ValueError:
                pass
    return (min(lefts) if lefts else None), fqans


def expected_fqan(voms: str) -> str:
    """'atlas:/atlas/Role=production' -> '/atlas/Role=production'; 'atlas' -> '/atlas'."""
    vo, _, fqan = voms.partition(":")
    return fqan or f"/{vo}"


def _fqan_matches(expected: str, fqans: list[str]) -> bool:
    """The primary (first) FQAN is the one asked for (VOMS may add /Role=NULL/Capability=NULL)."""
    if not fqans:
        return False
    first = fqans[0]
    for suffix in ("/Capability=NULL", "/Role=NULL"):
        first = first.removesuffix(suffix)
    return first == expected


def renewal_reason(profile: ProxyProfile, info: ProxyInfo) -> str | None:
    """Why the proxy must be renewed now, or None."""
    if info.problem:
        return info.problem
    if info.time_left is None or info.time_left < profile.min_lifetime:
        return f"{duration(info.time_left)} left, less than {duration(profile.min_lifetime)}"
    if profile.voms:
        if info.voms_time_left is None:
            return "no VOMS attribute"
        if info.voms_time_left < profile.min_lifetime:
            return f"VOMS attribute has {duration(info.voms_time_left)} left, less than {duration(profile.min_lifetime)}"
        if not _fqan_matches(expected_fqan(profile.voms), info.fqans):
            return f"FQAN {info.fqans[0] if info.fqans else 'none'} is not {expected_fqan(profile.voms)}"
    return None


# -- making a proxy ----------------------------------------------------------------------------


def _hours_minutes(seconds: int) -> str:
    return f"{seconds // 3600}:{(seconds % 3600) // 60:02d}"


def _precheck(certificate: CertificateConfig, now: float) -> tuple[object, str | None]:
    """Refuse a certificate before any tool runs: missing, expired, not yet valid, key open to others.
    Returns (the certificate, passphrase or None)."""
    from cryptography import x509

    try:
        data = certificate.cert.read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"certificate {certificate.cert} does not exist") from None
    except OSError as exc:
        raise CredentialError(f"certificate {certificate.cert}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except Exception:
        raise CredentialError(f"certificate {certificate.cert} is not a PEM certificate") from None
    if _not_after(cert) <= now:
        raise CredentialError(f"certificate {certificate.cert} ({dn(cert.subject)}) expired on {_utc(_not_after(cert))}")
    if cert.not_valid_before_utc.timestamp() > now:
        raise CredentialError(f"certificate {certificate.cert} is not valid before "
                              f"{_utc(cert.not_valid_before_utc.timestamp())}")
    try:
        check_private(certificate.key, "key")
        passphrase = (read_secret_file(certificate.passphrase_file, "passphrase file")
                      if certificate.passphrase_file else None)
    except SecretFileError as exc:
        raise CredentialError(str(exc)) from None
    return cert, passphrase


def _voms_proxy_init(profile: ProxyProfile, certificate: CertificateConfig, out: Path, passphrase: str | None) -> None:
    args = [_find_tool("voms-proxy-init"), "-rfc", "-cert", str(certificate.cert), "-key", str(certificate.key),
            "-out", str(out), "-valid", _hours_minutes(profile.lifetime), "-bits", str(profile.bits)]
    if profile.voms:
        args += ["-voms", profile.voms, "-vomslife", _hours_minutes(profile.lifetime)]
    if profile.ca:
        args += ["-certdir", str(profile.ca)]
    if profile.vomses:
        args += ["-vomses", str(profile.vomses)]
    if passphrase is not None:
        args.append("-pwstdin")
    result = _run(args, profile, stdin=(passphrase + "\n") if passphrase is not None else None)
    if result.returncode != 0 or not out.exists():
        raise _tool_failure("voms-proxy-init", result)


def _arcproxy(profile: ProxyProfile, certificate: CertificateConfig, out: Path, passphrase: str | None) -> None:
    args = [_find_tool("arcproxy"), "-C", str(certificate.cert), "-K", str(certificate.key), "-P", str(out),
            "-c", f"validityPeriod={profile.lifetime}", "-c", f"keybits={profile.bits}",
            "-t", str(max(1, int(profile.timeout)))]
    if profile.voms:
        args += ["-S", profile.voms, "-c", f"vomsACvalidityPeriod={profile.lifetime}"]
    if profile.ca:
        args += ["-T", str(profile.ca)]
    if profile.vomsdir:
        args += ["-s", str(profile.vomsdir)]
    if profile.vomses:
        args += ["-V", str(profile.vomses)]
    if passphrase is not None:
        args += ["-p", "key=stdin"]
    result = _run(args, profile, stdin=(passphrase + "\n") if passphrase is not None else None)
    if result.returncode != 0 or not out.exists():
        raise _tool_failure("arcproxy", result)


def build_proxy(user, user_key, lifetime: float, bits: int = 2048, common_name: str | None = None):
    """An RFC 3820 impersonation proxy of `user` (subject: user DN + CN=<serial or common_name>), signed by
    `user_key`, valid for `lifetime` seconds but never past the user certificate. Returns (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    serial = int.from_bytes(os.urandom(4), "big") | 1
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    end = min(start + dt.timedelta(seconds=lifetime + 300), user.not_valid_after_utc)
    subject = x509.Name(list(user.subject.rdns) + [x509.RelativeDistinguishedName(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name or str(serial))])])
    algorithm = None if type(user_key).__name__.startswith("Ed") else hashes.SHA256()
    proxy = (x509.CertificateBuilder().subject_name(subject).issuer_name(user.subject).public_key(key.public_key())
             .serial_number(serial).not_valid_before(start).not_valid_after(end)
             .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                          data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(PROXY_CERT_INFO), _INHERIT_ALL),
                            critical=True)
             .sign(user_key, algorithm))
    return proxy, key


def _builtin(profile: ProxyProfile, certificate: CertificateConfig, out: Path, passphrase: str | None) -> None:
    """An RFC 3820 impersonation proxy made here (no VOMS): proxy cert, its key, then the user's chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(certificate.cert.read_bytes())
        user_key = serialization.load_pem_private_key(certificate.key.read_bytes(),
                                                      passphrase.encode() if passphrase is not None else None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"key {certificate.key}: cannot load ({str(exc).splitlines()[0] if str(exc) else 'bad key'}"
                              "; wrong or missing passphrase?)") from None
    user = chain[0]
    if _public_bytes(user_key.public_key()) != _public_bytes(user.public_key()):
        raise CredentialError(f"key {certificate.key} does not belong to certificate {certificate.cert}")
    proxy, key = build_proxy(user, user_key, profile.lifetime, profile.bits)
    pem = (proxy.public_bytes(serialization.Encoding.PEM)
           + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())
           + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    write_private(out, pem)


TOOLS = {"voms-proxy-init": _voms_proxy_init, "arcproxy": _arcproxy, "builtin": _builtin}


def _candidate(profile: ProxyProfile, certificate: CertificateConfig, workdir: Path, user_cert,
               passphrase: str | None) -> tuple[Path, ProxyInfo, str | None]:
    """Make a proxy from one certificate into workdir and verify it. Returns (file, what it holds, why it is
    short of the profile's demands or None). Raises CredentialError when it is not a usable proxy at all."""
    out = workdir / "proxy.pem"
    TOOLS[profile.tool](profile, certificate, out, passphrase)
    info = inspect_proxy(profile, out, now=time.time())
    if info.problem:
        raise CredentialError(f"{profile.tool} made no usable proxy: {info.problem}")
    if info.identity != dn(user_cert.subject):
        raise CredentialError(f"{profile.tool} made a proxy for {info.identity}, not {dn(user_cert.subject)}")
    if info.time_left is None or info.time_left <= 0:
        raise CredentialError(f"{profile.tool} made an expired proxy")
    if profile.voms and not _fqan_matches(expected_fqan(profile.voms), info.fqans):
        raise CredentialError(f"proxy has FQAN {info.fqans[0] if info.fqans else 'none'}, "
                              f"not {expected_fqan(profile.voms)}")
    short = None
    if info.time_left < profile.min_lifetime:
        short = (f"proxy from {certificate.cert} lives only {duration(info.time_left)} (certificate expires "
                 f"{_utc(_not_after(user_cert))}), less than {duration(profile.min_lifetime)}")
    elif profile.voms and (info.voms_time_left or 0) < profile.min_lifetime:
        short = f"VOMS attribute lives only {duration(info.voms_time_left)}, less than {duration(profile.min_lifetime)}"
    return out, info, short


# A proxy no profile renews (a plain `[panda] proxy`, kept by the site's own cron): --check says it needs
# attention when less than this is left.
UNMANAGED_WARNING = 86400


def check_unmanaged(file: Path, name: str = "panda", now: float | None = None) -> ProfileResult:
    """`renew-proxy --check` of a proxy file no [proxies.NAME] profile maintains: what it holds and how long
    it lives; "ok", "expires soon" (less than a day), "expired" or "failed" (missing, unreadable, not a proxy)."""
    started = time.monotonic()
    info = inspect_proxy(ProxyProfile(name=name, file=file, certificates=[]), now=now)
    result = ProfileResult(name, "proxy", str(file), time_left=info.time_left, identity=info.identity,
                           fqans=info.fqans)
    if info.problem:
        result.action, result.reason = "failed", info.problem
    elif info.time_left is None or info.time_left <= 0:
        result.action, result.reason = "expired", "expired: no [proxies.NAME] profile renews it"
    elif info.time_left < UNMANAGED_WARNING:
        result.action = "expires soon"
        result.reason = f"{duration(info.time_left)} left, and no [proxies.NAME] profile renews it"
    result.seconds = time.monotonic() - started
    return result


def renew_proxy(profile: ProxyProfile, *, force: bool = False, check_only: bool = False,
                now: float | None = None) -> ProfileResult:
    started = time.monotonic()
    result = ProfileResult(profile.name, "proxy", str(profile.file))
    where = f"proxies.{profile.name}"
    info = inspect_proxy(profile, now=now)
    reason = renewal_reason(profile, info)
    if force and reason is None:
        reason = "forced"
    result.time_left, result.identity, result.fqans, result.reason = info.time_left, info.identity, info.fqans, reason
    if reason is None or check_only:
        result.action = "ok" if reason is None else "would renew"
        result.seconds = time.monotonic() - started
        return result
    # One renewal of a profile at a time: a second cron run waits, then finds the proxy fresh.
    with locked(profile.file):
        if not force:   # another run may have renewed it while this one waited for the lock
            info = inspect_proxy(profile, now=now)
            if renewal_reason(profile, info) is None:
                result.action, result.reason = "ok", "renewed meanwhile by another run"
                result.time_left, result.identity, result.fqans = info.time_left, info.identity, info.fqans
                result.seconds = time.monotonic() - started
                return result
        _renew_locked(profile, result, info, where)
    result.seconds = time.monotonic() - started
    return result


def _renew_locked(profile: ProxyProfile, result: ProfileResult, current: ProxyInfo, where: str) -> None:
    fallback: tuple[Path, ProxyInfo, str, CertificateConfig] | None = None
    workdirs: list[Path] = []
    try:
        for certificate in profile.certificates:
            t0 = time.monotonic()
            attempt = Attempt(str(certificate.cert), ok=False)
            result.attempts.append(attempt)
            try:
                user_cert, passphrase = _precheck(certificate, time.time())
                workdir = Path(tempfile.mkdtemp(dir=profile.file.parent, prefix=f".{profile.file.name}."))
                workdirs.append(workdir)
                out, info, short = _candidate(profile, certificate, workdir, user_cert, passphrase)
            except (CredentialError, SecretFileError, OSError) as exc:
                text = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
                attempt.reason, attempt.seconds = text, time.monotonic() - t0
                log.warning("%s: certificate %s skipped: %s", where, certificate.cert, attempt.reason)
                result.problems.append(Problem(f"{where}:certificate:{certificate.cert}",
                                               f"[{where}] certificate {certificate.cert} failed: {attempt.reason}"))
                continue
            attempt.seconds = time.monotonic() - t0
            if short is None:
                attempt.ok = True
                _install(profile, out, info, certificate, result)
                return
            attempt.reason = short
            result.problems.append(Problem(f"{where}:certificate:{certificate.cert}", f"[{where}] {short}"))
            if fallback is None or (info.time_left or 0) > (fallback[1].time_left or 0):
                fallback = (out, info, short, certificate)
        # No certificate gave what the profile asks for: a shorter proxy beats an older or no proxy.
        current_left = -1.0 if current.problem or current.time_left is None else current.time_left
        if fallback and (fallback[1].time_left or 0) > current_left:
            out, info, _, certificate = fallback
            next(a for a in result.attempts if a.certificate == str(certificate.cert)).ok = True
            _install(profile, out, info, certificate, result)
            return
        result.action = "failed"
        now_holds = current.problem or f"{duration(current.time_left)} left"
        result.problems.append(Problem(
            f"{where}:renewal", f"[{where}] renewal failed with all {len(profile.certificates)} certificate(s); "
                                f"{profile.file}: {now_holds}"))
    finally:
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


def _install(profile: ProxyProfile, out: Path, info: ProxyInfo, certificate: CertificateConfig,
             result: ProfileResult) -> None:
    install_private(out, profile.file)
    result.action = "renewed"
    result.certificate = str(certificate.cert)
    result.time_left, result.identity, result.fqans = info.time_left, info.identity, info.fqans
    log.info("proxies.%s: renewed %s from %s (%s, %s left%s)", profile.name, profile.file, certificate.cert,
             info.identity, duration(info.time_left), f", FQAN {info.fqans[0]}" if info.fqans else "")


