"""A throw-away test CA with a host certificate and a user certificate plus an RFC 3820 proxy,
for the PanDA simulator, the demo and tests. Never for production."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestPKI:
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def host_cert(self) -> Path:
        return self.directory / "hostcert.pem"

    @property
    def host_key(self) -> Path:
        return self.directory / "hostkey.pem"

    @property
    def user_cert(self) -> Path:
        return self.directory / "usercert.pem"

    @property
    def user_key(self) -> Path:
        return self.directory / "userkey.pem"

    @property
    def proxy(self) -> Path:
        return self.directory / "proxy.pem"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(*parts: tuple) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: float, not_before=None, serial=None):
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(serial or x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days)))


def make_ca(directory: Path, days: float = 30) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    name = _name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "harvester-cli"),
                 (NameOID.COMMON_NAME, "harvester-cli Test CA"))
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "cakey.pem", _pem_key(key), secret=True)
    return cert, key


def make_user_cert(ca: x509.Certificate, ca_key, common_name: str, *, days: float = 30,
                   not_before: dt.datetime | None = None) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    subject = _name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "harvester-cli"),
                    (NameOID.ORGANIZATIONAL_UNIT_NAME, "test"), (NameOID.COMMON_NAME, common_name))
    cert = (_builder(subject, ca.subject, key.public_key(), days, not_before)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            # voms-proxy-init refuses a user certificate without a Subject Key Identifier
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def make_proxy(user_cert: x509.Certificate, user_key, hours: float = 96) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """An RFC 3820 proxy of the test user (the same builder renew-proxy uses)."""
    from harvester_cli.site.proxies import build_proxy

    return build_proxy(user_cert, user_key, hours * 3600)


def create(directory: Path, user: str = "harvester-cli test user", addresses: tuple[str, ...] = ()) -> TestPKI:
    """Make CA, host cert (localhost, 127.0.0.1 and `addresses`), user cert and a proxy file (cert, key,
    user cert). `addresses`: where else the simulator listens (a test network of several hosts)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = TestPKI(directory)
    ca, ca_key = make_ca(directory)
    host_key = _key()
    host = (_builder(_name((NameOID.COMMON_NAME, "localhost")), ca.subject, host_key.public_key(), 30)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(IPv4Address("127.0.0.1")),
                                                        *(x509.IPAddress(IPv4Address(a)) for a in addresses)]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # Python 3.13's strict verification refuses a server certificate without one
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(pki.host_cert, host.public_bytes(serialization.Encoding.PEM))
    _write(pki.host_key, _pem_key(host_key), secret=True)
    user_cert, user_key = make_user_cert(ca, ca_key, user)
    _write(pki.user_cert, user_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.user_key, _pem_key(user_key), secret=True)
    proxy, proxy_key = make_proxy(user_cert, user_key)
    _write(pki.proxy, proxy.public_bytes(serialization.Encoding.PEM) + _pem_key(proxy_key)
           + user_cert.public_bytes(serialization.Encoding.PEM), secret=True)
    return pki
