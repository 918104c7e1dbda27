"""A grid-style test CA for credential tests: a hashed CA directory (what -certdir / X509_CERT_DIR expect),
user certificates (one valid, one expired, one short-lived), and a VOMS server certificate with its .lsc
file for voms-proxy-fake. Made with `cryptography`; never for production.

    python tests/peers/grid_ca.py /tmp/grid-ca      # make one by hand and print what is where

voms-proxy-init (voms-clients 2.1) makes no proxy from a user certificate without a Subject Key
Identifier (it exits 1 after "verification failed", or 0 without writing a file with -dont-verify-ac), so
every certificate here carries one.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key, passphrase: str | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption)


def _name(*rdns: tuple) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in rdns])


def _usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                         data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class UserCert:
    cert: Path
    key: Path
    dn: str


@dataclass
class GridCA:
    directory: Path
    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def certdir(self) -> Path:
        return self.directory / "certificates"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def vomsdir(self) -> Path:
        return self.directory / "vomsdir"

    def _sign(self, subject: x509.Name, public_key, not_before: dt.datetime, not_after: dt.datetime,
              extra=()) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_usage(), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def user(self, name: str, *, hours: float = 30 * 24, start_hours_ago: float = 1.0,
             passphrase: str | None = None, key_mode: int = 0o600) -> UserCert:
        """A user certificate valid from `start_hours_ago` for `hours` (negative end: already expired)."""
        key = _key()
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=start_hours_ago)
        subject = _name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "harvester-cli"),
                        (NameOID.ORGANIZATIONAL_UNIT_NAME, "users"), (NameOID.COMMON_NAME, name))
        cert = self._sign(subject, key.public_key(), start, start + dt.timedelta(hours=hours),
                          [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
        slug = name.replace(" ", "-")
        cert_path, key_path = self.directory / f"{slug}-cert.pem", self.directory / f"{slug}-key.pem"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _key_pem(key, passphrase), key_mode)
        return UserCert(cert_path, key_path, "/DC=org/DC=harvester-cli/OU=users/CN=" + name)

    def voms_server(self, vo: str, host: str = "voms.test.example") -> tuple[Path, Path]:
        """A VOMS server certificate and key, and the vomsdir .lsc that makes its ACs trusted."""
        key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        cert = self._sign(_name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "harvester-cli"),
                                (NameOID.COMMON_NAME, host)),
                          key.public_key(), now - dt.timedelta(hours=1), now + dt.timedelta(days=30))
        cert_path, key_path = self.directory / "voms-cert.pem", self.directory / "voms-key.pem"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _key_pem(key), 0o600)
        (self.vomsdir / vo).mkdir(parents=True, exist_ok=True)
        (self.vomsdir / vo / f"{host}.lsc").write_text(
            f"/DC=org/DC=harvester-cli/CN={host}\n/DC=org/DC=harvester-cli/CN=harvester-cli Grid Test CA\n")
        return cert_path, key_path


def subject_hash(ca_file: Path) -> str:
    """OpenSSL's subject hash, the name of the CA file in a hashed certificate directory."""
    return subprocess.run(["openssl", "x509", "-in", str(ca_file), "-noout", "-hash"], capture_output=True,
                          text=True, check=True).stdout.strip()


def make_ca(directory: Path) -> GridCA:
    directory.mkdir(parents=True, exist_ok=True)
    key = _key()
    name = _name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "harvester-cli"),
                 (NameOID.COMMON_NAME, "harvester-cli Grid Test CA"))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    ca = GridCA(directory, cert, key)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(ca.ca_file, pem, 0o644)
    ca.certdir.mkdir(exist_ok=True)
    hashed = subject_hash(ca.ca_file)
    _write(ca.certdir / f"{hashed}.0", pem, 0o644)
    # the Globus signing policy some tools look for beside the CA
    (ca.certdir / f"{hashed}.signing_policy").write_text(
        "access_id_CA X509 '/DC=org/DC=harvester-cli/CN=harvester-cli Grid Test CA'\n"
        "pos_rights globus CA:sign\ncond_subjects globus '\"/DC=org/DC=harvester-cli/*\"'\n")
    ca.vomsdir.mkdir(exist_ok=True)
    return ca


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "grid-ca")
    grid = make_ca(target)
    expired = grid.user("expired user", hours=24, start_hours_ago=72)
    valid = grid.user("valid user")
    print(f"CA directory (-certdir): {grid.certdir}")
    print(f"expired: {expired.cert} {expired.key}")
    print(f"valid:   {valid.cert} {valid.key}")
