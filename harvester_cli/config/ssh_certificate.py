"""The validity of an OpenSSH user certificate (`<key>-cert.pub`, as ssh uses it beside its key), read from
the file itself (OpenSSH's PROTOCOL.certkeys): a login node that refuses a certificate only says "Permission
denied", so the transport looks here to tell an expired certificate from a key the node does not know, and
`config check` says it before a run finds out. Here, in config, because both it and the backends may import
config, and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
from dataclasses import dataclass
from pathlib import Path

# Fields of the public key inside a certificate, between its nonce and its serial, per certificate type.
_KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": 1, "ssh-rsa-cert-v01@openssh.com": 2, "ssh-dss-cert-v01@openssh.com": 4,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2, "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2, "sk-ssh-ed25519-cert-v01@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": 3,
}
FOREVER = 2**64 - 1


@dataclass(frozen=True)
class Validity:
    """When a certificate is valid: from `after` to `before` (epoch seconds; `before` None: for ever)."""

    after: int
    before: int | None

    def problem(self, now: float | None = None) -> str | None:
        """Why it is not valid now ("expired at ...", "valid only from ..."), None when it is."""
        now = time.time() if now is None else now
        if self.before is not None and now >= self.before:
            return f"expired at {_utc(self.before)}"
        if now < self.after:
            return f"is valid only from {_utc(self.after)}"
        return None


def certificate_of(key: Path) -> Path:
    """Where ssh looks for the certificate of the private key `key`."""
    return key.with_name(f"{key.name}-cert.pub")


def validity(path: Path) -> Validity | None:
    """The validity of the certificate in `path`; None when there is none there or it is not one."""
    try:
        words = path.read_text().split()
        blob = base64.b64decode(words[1], validate=True)
    except (OSError, UnicodeDecodeError, IndexError, binascii.Error, ValueError):
        return None
    return parse(blob)


def parse(blob: bytes) -> Validity | None:
    """The validity fields of a certificate's wire form, None if it is not a certificate of a known type."""
    position = 0

    def string() -> bytes:
        nonlocal position
        (length,) = struct.unpack_from(">I", blob, position)
        if position + 4 + length > len(blob):
            raise ValueError("truncated")
        position += 4 + length
        return blob[position - length:position]

    try:
        kind = string().decode("ascii", "replace")
        if kind not in _KEY_FIELDS:
            return None
        for _ in range(1 + _KEY_FIELDS[kind]):   # the nonce, then the public key
            string()
        position += 8 + 4                         # serial, certificate type
        string(), string()                        # key id, principals
        after, before = struct.unpack_from(">QQ", blob, position)
    except (struct.error, ValueError):
        return None
    return Validity(after, None if before == FOREVER else before)


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(min(seconds, 253402300799)))
