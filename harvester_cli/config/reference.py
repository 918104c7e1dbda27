"""Every configuration key as a reference table, made from the schema itself (`config keys`,
docs/configuration.md), so the documentation cannot drift from what is validated."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvester_cli.config import backend_options, sections
from harvester_cli.config.schema import INT_MAX, REQUIRED, Rule, rule_of

# (table as written in the file, section class)
TABLES: tuple[tuple[str, type], ...] = (
    ("", sections.Config),
    ("[panda]", sections.PandaConfig),
    ("[queues.NAME] and [queue_defaults]", sections.QueueConfig),
    ("[sweep]", sections.SweepConfig),
    ("[proxies.NAME]", sections.ProxyProfile),
    ("[proxies.NAME] certificates = [{...}]", sections.CertificateConfig),
    ("[tokens.NAME]", sections.TokenProfile),
    ("[smtp]", sections.SmtpConfig),
    ("[log_retention]", sections.LogRetentionConfig),
    ("[log_retention.CLASS]", sections.RetentionConfig),
    ("[command_log]", sections.CommandLogConfig),
    ("[cron]", sections.CronConfig),
    ("[log_server]", sections.LogServerConfig),
    ("[metrics]", sections.MetricsConfig),
    ("[instance]", sections.InstanceConfig),
    *((f"[queues.NAME.backend_options] of backend = \"{name}\"", cls)
      for name, cls in backend_options.BACKEND_OPTIONS.items()),
    ("[queues.NAME.backend_options] ces = [{...}] (htcondor)", backend_options.CE),
    ("[queues.NAME.backend_options] schedds = [{...}] (htcondor)", backend_options.Schedd),
)


@dataclass
class Key:
    table: str
    key: str
    type: str
    default: str
    meaning: str


def _type(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("harvester_cli.config.", "")
    for module in ("sections.", "backend_options.", "<class '", "'>"):
        text = text.replace(module, "")
    return text.replace("Path", "path").replace(" | None", " (optional)")


def _default(f: dataclasses.Field) -> str:
    if f.default is not REQUIRED:
        value = f.default
    elif f.default_factory is not REQUIRED:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(table)"
    else:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, (str, list, dict)) else f"{value:g}" if isinstance(value, float) else str(value)


def _range(rule: Rule, annotation: Any) -> str:
    notes = []
    if rule.choices:
        notes.append("one of " + ", ".join(rule.choices))
    numeric = any(t in (int, float) for t in (annotation, *typing.get_args(annotation)))
    if numeric:
        low = f"> {rule.above:g}" if rule.above is not None else (f">= {rule.minimum:g}" if rule.minimum else "")
        high = f"<= {rule.maximum:g}" if rule.maximum is not None and rule.maximum != INT_MAX else ""
        if low or high:
            notes.append(" and ".join(x for x in (low, high) if x))
    if rule.https:
        notes.append("https:// URL")
    if rule.must_exist:
        notes.append(f"must exist ({rule.must_exist})")
    if rule.secret:
        notes.append("secret: mode 0600")
    return f" ({'; '.join(notes)})" if notes else ""


def keys() -> list[Key]:
    out = []
    for table, cls in TABLES:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            rule = rule_of(f)
            if rule is None or f.name == "name" or dataclasses.is_dataclass(hints[f.name]):
                continue
            if typing.get_origin(hints[f.name]) is dict and table == "":
                continue   # [queues], [proxies], [tokens]: tables of their own below
            out.append(Key(table or "(top level)", f.name, _type(hints[f.name]), _default(f),
                           rule.doc + _range(rule, hints[f.name])))
    return out


def markdown() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the configuration schema (`harvester_cli/config/`) by `harvester-cli config keys "
             "--markdown`; a test keeps it in step. Relative paths are relative to the configuration file.", ""]
    current = None
    for key in keys():
        if key.table != current:
            current = key.table
            lines += ["", f"## {current}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        meaning = key.meaning.replace("|", "\\|")
        lines.append(f"| `{key.key}` | {key.type} | `{key.default}` | {meaning} |")
    return "\n".join(lines) + "\n"


REFERENCE_FILE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
