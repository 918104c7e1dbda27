"""The configuration as an operator is shown it (`config check`): plain JSON-able data, and database URLs
without their password."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harvester_cli.config.sections import Config


def display_url(url: str) -> str:
    """A database URL without its password (a libpq `password=` in the query too), for output; several
    hosts read as written (`?host=db1:5432&host=db2:5432`)."""
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if "password" in parsed.query:
            parsed = parsed.update_query_dict({"password": "***"})
        shown = parsed.render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show it as given (it has no password to hide then)
        return url
    base, question, query = shown.partition("?")
    if not question:
        return shown
    # SQLAlchemy quotes the hosts' colons (host=db1%3A5432): shown as the operator wrote them
    parts = [unquote(p) if p.startswith(("host=", "port=", "password=")) else p for p in query.split("&")]
    return f"{base}?{'&'.join(parts)}"


def as_dict(config: Config) -> dict:
    """The resolved configuration as plain JSON-able data (for `config check`)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data = plain(config)
    data["state"] = display_url(config.state_url)
    data["log_dir"] = str(config.logs)
    data["work_dir"] = str(config.work_root)
    return data
