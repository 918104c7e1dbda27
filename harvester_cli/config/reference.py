"""Every configuration key as a reference table, made from the schema itself (`config keys`,
docs/configuration.md), so the documentation cannot drift from what is validated."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvester_cli.config import backend_options, sections
from harvester_cli.config.schema import INT_MAX, REQUIRED, Rule, rule_of, type_hints

# (table as written in the file, section class, its keys' dotted names start with)
TABLES: tuple[tuple[str, type, str], ...] = (
    ("", sections.Config, ""),
    ("[panda]", sections.PandaConfig, "panda"),
    ("[queues.NAME] and [queue_defaults]", sections.QueueConfig, "queues"),
    ("[queues.NAME.many_to_one]", sections.ManyToOneConfig, "queues.many_to_one"),
    ("[sweep]", sections.SweepConfig, "sweep"),
    ("[proxies.NAME]", sections.ProxyProfile, "proxies"),
    ("[proxies.NAME] certificates = [{...}]", sections.CertificateConfig, "proxies.certificates"),
    ("[tokens.NAME]", sections.TokenProfile, "tokens"),
    ("[smtp]", sections.SmtpConfig, "smtp"),
    ("[log_retention]", sections.LogRetentionConfig, "log_retention"),
    ("[log_retention.CLASS]", sections.RetentionConfig, "log_retention.CLASS"),
    ("[command_log]", sections.CommandLogConfig, "command_log"),
    ("[cron]", sections.CronConfig, "cron"),
    ("[log_server]", sections.LogServerConfig, "log_server"),
    ("[metrics]", sections.MetricsConfig, "metrics"),
    ("[instance]", sections.InstanceConfig, "instance"),
    ("[downtimes]", sections.DowntimesConfig, "downtimes"),
    ("[[downtimes.scheduled]]", sections.DowntimeEntry, "downtimes.scheduled"),
    ("[caps.NAME]", sections.CapConfig, "caps"),
    *((f"[queues.NAME.backend_options] of backend = \"{name}\"", cls, f"queues.backend_options.{name}")
      for name, cls in backend_options.BACKEND_OPTIONS.items()),
    ("[queues.NAME.backend_options] ces = [{...}] (htcondor)", backend_options.CE,
     "queues.backend_options.htcondor.ces"),
    ("[queues.NAME.backend_options] schedds = [{...}] (htcondor)", backend_options.Schedd,
     "queues.backend_options.htcondor.schedds"),
)


@dataclass
class Key:
    table: str
    key: str
    type: str
    default: str
    meaning: str
    path: str = ""   # the key's dotted name, as `config keys NAME` finds it: queues.max_workers


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
    for table, cls, prefix in TABLES:
        hints = type_hints(cls)
        for f in dataclasses.fields(cls):
            rule = rule_of(f)
            if rule is None or f.name == "name" or dataclasses.is_dataclass(hints[f.name]):
                continue
            if typing.get_origin(hints[f.name]) is dict and table == "":
                continue   # [queues], [proxies], [tokens]: tables of their own below
            out.append(Key(table or "(top level)", f.name, _type(hints[f.name]), _default(f),
                           rule.doc + _range(rule, hints[f.name]), f"{prefix}.{f.name}" if prefix else f.name))
    return out


def matching(terms: tuple[str, ...] | list[str]) -> list[Key]:
    """The keys the operator's words name (every key without any): a table (`panda`, `queues`,
    `queue_defaults`, a backend's options `htcondor`), a dotted key (`queues.max_workers`, `panda.url`) or
    a key's own name (`max_workers`). Raises ValueError naming a word that matches nothing, with the
    nearest names."""
    every = keys()
    if not terms:
        return every
    def names(key: Key) -> set[str]:
        parts = key.path.lower().split(".")
        out = {key.path.lower(), key.key.lower()}
        out |= {".".join(parts[:n]) for n in range(1, len(parts))}
        if parts[0] == "queues":   # [queue_defaults] takes the keys of a queue; a backend's name its options
            out |= {n.replace("queues", "queue_defaults", 1) for n in set(out) if n.startswith("queues")}
            if parts[1] == "backend_options":   # htcondor, htcondor.ces, htcondor.schedd
                out |= {".".join(parts[2:n]) for n in range(3, len(parts) + 1)}
        return out

    found, named = [], {key.path: names(key) for key in every}
    for term in terms:
        hits = [k for k in every if term.lower().strip("[]") in named[k.path]]
        if not hits:
            import difflib

            near = difflib.get_close_matches(term.lower(), sorted(set().union(*named.values())), n=3)
            raise ValueError(f"no configuration key or table {term!r}"
                             + (f" (did you mean {', '.join(near)}?)" if near else ""))
        found += [k for k in hits if k not in found]
    return found


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
