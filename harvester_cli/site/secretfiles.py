"""Files that hold secrets (keys, passphrases, client secrets, proxies, tokens): refused when others can read
them, written atomically with mode 0600, and their contents registered so no log line shows them."""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harvester_cli.errors import HarvesterError
from harvester_cli.site.logs import make_dirs, register_secret


class SecretFileError(HarvesterError):
    """A secret input file is missing, unreadable or readable by others. The text is one line."""


def check_private(path: Path, what: str = "file") -> os.stat_result:
    """The file exists, is a regular file, and neither group nor others may read or write it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SecretFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise SecretFileError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretFileError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise SecretFileError(f"refused: {what} {path} has mode {stat.S_IMODE(st.st_mode):04o}, readable by others; "
                              f"run chmod 600 {path}")
    return st


def read_secret_file(path: Path, what: str = "secret file") -> str:
    """The secret in a private file, without its trailing newline; registered for redaction."""
    check_private(path, what)
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"{what} {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    register_secret(value)
    return value


def read_token(path: Path) -> str:
    """A bearer token file's token: one word of printable ASCII (what an HTTP header can carry), registered
    for redaction. A file that is not that (binary, another text, a link to some other file) is a
    SecretFileError of one line that shows none of its content."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecretFileError(f"token file {path}: {exc.strerror}") from None
    token = data.strip()
    if not token or not all(33 <= b < 127 for b in token):
        what = "empty" if not token else "not a bearer token (one line of ASCII text without spaces)"
        raise SecretFileError(f"token file {path}: {what}")
    text = token.decode("ascii")
    register_secret(text)
    return text


def write_private(path: Path, data: bytes) -> None:
    """Write atomically (temporary file in the same directory, fsync, rename) with mode 0600."""
    make_dirs(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for rewriting `path`: one process at a time, e.g. two cron runs renewing the
    same proxy or updating the same state file. The lock is taken on the file's directory, so no lock file
    is left beside a proxy (the directory is made 0700 if missing)."""
    make_dirs(path.parent, 0o700)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def install_private(source: Path, path: Path) -> None:
    """Move a file written by a tool into place atomically, mode 0600 first."""
    os.chmod(source, 0o600)
    with open(source, "rb") as f:
        os.fsync(f.fileno())
    os.replace(source, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
