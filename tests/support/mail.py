"""An SMTP server on loopback (aiosmtpd, in this process) that keeps every mail it receives: the peer that
renew-proxy's alert mails go to. Only tests under tests/integration/credentials ask for `smtp`."""

from __future__ import annotations

import email
import threading
import time

import pytest

from tests.support.harness import free_port


class Mailbox:
    def __init__(self):
        self.messages: list[email.message.Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def wait(self, count: int, timeout: float = 10.0) -> list:
        """The first `count` mails (or what arrived by the timeout); read their text with body()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.05)
        return list(self.messages)


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


def body(mail: email.message.Message) -> str:
    """A mail's text as its reader sees it: long lines (a long certificate path) arrive quoted-printable,
    cut with soft line breaks, so the raw payload is never what a test should search."""
    payload = mail.get_payload(decode=True)
    return payload.decode(mail.get_content_charset() or "utf-8")
