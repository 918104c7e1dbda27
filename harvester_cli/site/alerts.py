"""Alert mail over SMTP, throttled: the same problem is mailed at most once per interval.

The throttle lives in a small JSON file (problem key -> when it was last mailed) under the log
directory's `.state/`, updated under an exclusive lock, so two runs at once send one mail, not two.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harvester_cli.config import SmtpConfig
from harvester_cli.site.secretfiles import locked

log = logging.getLogger(__name__)

# Entries older than this are forgotten (a problem that came back after a month mails again anyway).
FORGET_AFTER = 30 * 24 * 3600


@dataclass(frozen=True)
class Problem:
    """Something an operator must hear about. `key` is stable across runs (for the throttle), `text` is one
    line without secrets."""

    key: str
    text: str


@dataclass
class AlertOutcome:
    configured: bool
    sent: list[str] = field(default_factory=list)        # problem keys mailed now
    throttled: list[str] = field(default_factory=list)   # mailed recently: not again yet
    error: str | None = None                              # the mail could not be sent (retried next run)
    recipients: list[str] = field(default_factory=list)


def state_file(log_dir: Path) -> Path:
    return log_dir / ".state" / "alerts.json"


def _load(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("alert throttle state %s unreadable (%s): starting afresh", path, exc)
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, float]) -> None:
    from harvester_cli.site.secretfiles import write_private

    write_private(path, json.dumps(data, indent=1, sort_keys=True).encode())


def compose(smtp: SmtpConfig, harvester_id: str, subject: str, problems: Sequence[Problem]):
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(smtp.to)
    message["Subject"] = f"[harvester-cli {harvester_id}] {subject}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=socket.getfqdn() or "localhost")
    lines = [f"harvester-cli on {socket.getfqdn()} (harvester id {harvester_id}) reports:", ""]
    lines += [f"- {p.text}" for p in problems]
    lines += ["", f"The same problem is mailed again at the earliest in {smtp.throttle} s."]
    message.set_content("\n".join(lines) + "\n")
    return message


def _send(smtp: SmtpConfig, message) -> None:
    """One delivery with timeouts, retried a bounded number of times on connection trouble and 4xx."""
    import smtplib
    import ssl

    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential,
    )

    from harvester_cli.site.secretfiles import read_secret_file

    password = read_secret_file(smtp.password_file) if smtp.password_file else None

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, smtplib.SMTPResponseException):
            return 400 <= exc.smtp_code < 500
        return isinstance(exc, (OSError, smtplib.SMTPServerDisconnected))

    def context():
        if smtp.ca is None:
            return ssl.create_default_context()
        if smtp.ca.is_dir():
            return ssl.create_default_context(capath=str(smtp.ca))
        return ssl.create_default_context(cafile=str(smtp.ca))

    def once() -> None:
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context())
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context())
            if smtp.username:
                client.login(smtp.username, password or "")
            client.send_message(message)

    Retrying(retry=retry_if_exception(transient), stop=stop_after_attempt(smtp.retries + 1),
             wait=wait_exponential(multiplier=0.5, max=8), reraise=True)(once)


def alert(smtp: SmtpConfig, log_dir: Path, harvester_id: str, subject: str, problems: Sequence[Problem],
          now: float | None = None) -> AlertOutcome:
    """Mail the problems not mailed within `smtp.throttle` seconds, in one message; record what was sent.
    Without recipients the problems are only logged."""
    for p in problems:
        log.info("alert: %s", p.text)
    outcome = AlertOutcome(configured=bool(smtp.to), recipients=list(smtp.to))
    if not problems or not smtp.to:
        return outcome
    now = time.time() if now is None else now
    path = state_file(log_dir)
    with locked(path):
        state = {k: v for k, v in _load(path).items() if now - v < FORGET_AFTER}
        fresh: list[Problem] = []
        for p in dict((p.key, p) for p in problems).values():
            if now - state.get(p.key, float("-inf")) < smtp.throttle:
                outcome.throttled.append(p.key)
            else:
                fresh.append(p)
        if fresh:
            try:
                _send(smtp, compose(smtp, harvester_id, subject, fresh))
            except Exception as exc:   # SMTP refused, unreachable, TLS: report, keep for the next run
                outcome.error = f"alert mail to {', '.join(smtp.to)} via {smtp.host}:{smtp.port} failed: " \
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
                log.error("%s", outcome.error)
            else:
                for p in fresh:
                    state[p.key] = now
                    outcome.sent.append(p.key)
                log.info("alert mailed to %s: %d problem(s)", ", ".join(smtp.to), len(fresh))
        _save(path, state)
    return outcome
