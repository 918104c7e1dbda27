"""pyarcrest 0.5 against A-REX 6.17 with cryptography >= 38: the delegation CSR fix, nothing else.

A-REX 6.17 answers a new delegation with a certificate request whose version field is INTEGER 2 (RFC 2986
allows only 0). cryptography >= 38 refuses to parse it (`InvalidVersion: 2 is not a valid CSR version`),
so pyarcrest's `createDelegation` and `refreshDelegation` fail before signing anything. The fix parses
a copy whose version byte is 0, verifies the signature over the bytes A-REX really signed (version 2),
and gives pyarcrest an object with the only two members its `signProxyCSR` uses: `public_key()` and
`is_signature_valid`. A request that parses normally is returned as is.

`install()` patches the name pyarcrest's arc module imported (`pyarcrest.arc.pemToCSR`); it is idempotent
and called by the ARC backend before its first delegation. tests/test_arc_unit.py shows the failure
without it.
"""

from __future__ import annotations

import base64
import re

_PEM = re.compile(r"-----BEGIN CERTIFICATE REQUEST-----(.*?)-----END CERTIFICATE REQUEST-----", re.S)


def _content_offset(der: bytes | bytearray, offset: int) -> int:
    """Offset of the content octets of the DER TLV that starts at `offset`."""
    length = der[offset + 1]
    return offset + 2 if length < 0x80 else offset + 2 + (length & 0x7F)


class LenientCSR:
    """The part of a CertificateSigningRequest that pyarcrest's signProxyCSR uses."""

    def __init__(self, public_key, signature_valid: bool):
        self._public_key = public_key
        self.is_signature_valid = signature_valid

    def public_key(self):
        return self._public_key


def load_csr(pem: str):
    """Parse a PEM certificate request, accepting the non-standard version 2 that A-REX 6.17 sends."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        return x509.load_pem_x509_csr(pem.encode())
    except x509.InvalidVersion:
        pass
    match = _PEM.search(pem)
    if not match:
        raise ValueError("no PEM certificate request")
    der = bytearray(base64.b64decode("".join(match.group(1).split())))
    info = _content_offset(der, 0)            # CertificationRequestInfo
    version = _content_offset(der, info)      # its first member: version INTEGER
    if der[version:version + 2] != b"\x02\x01":
        raise ValueError("unexpected certificate request layout")
    original = der[version + 2]
    der[version + 2] = 0
    csr = x509.load_der_x509_csr(bytes(der))
    signed = bytearray(csr.tbs_certrequest_bytes)
    signed[version + 2 - info] = original     # what the requester really signed
    key = csr.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(csr.signature, bytes(signed), padding.PKCS1v15(), csr.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(csr.signature, bytes(signed), ec.ECDSA(csr.signature_hash_algorithm))
        else:
            raise InvalidSignature()
        valid = True
    except InvalidSignature:
        valid = False
    return LenientCSR(key, valid)


def install() -> None:
    """Make pyarcrest parse delegation requests with `load_csr`."""
    import pyarcrest.arc

    pyarcrest.arc.pemToCSR = load_csr
