"""The rules that span tables of a parsed configuration: a profile name must point at a [proxies.NAME] or
[tokens.NAME] table of the right kind (one token file, or a token per CE), two profiles must not write one
file, the simulator's test pilot needs [panda] allow_test_pilot, harvester_id must not be empty, and a
downtime of a queue names a configured queue (a cap may name queues only other hosts run).

Rules within one table are the sections' own `problems()` (sections.py, backend_options.py); these run
once every table is built. Used by the loader only.
"""

from __future__ import annotations

from pathlib import Path

from harvester_cli.config.schema import Validator
from harvester_cli.config.sections import Config, is_test_pilot


def check_references(validator: Validator, config: Config) -> None:
    """Record (on `validator`) every name that does not point at the table it must, and every pair of tables
    that must not share a file."""
    for key, names in (("proxy_profile", config.proxies), ("token_profile", config.tokens)):
        wanted = getattr(config.panda, key)
        if wanted is not None and wanted not in names:
            table = "proxies" if key == "proxy_profile" else "tokens"
            validator.problem("panda", f"{key}: no [{table}.{wanted}] (configured: {', '.join(names) or 'none'})")
    for queue in config.queues.values():
        if queue.proxy_profile is not None and queue.proxy_profile not in config.proxies:
            validator.problem(f"queues.{queue.name}", f"proxy_profile: no [proxies.{queue.proxy_profile}] "
                                                      f"(configured: {', '.join(config.proxies) or 'none'})")
    tokens = config.tokens
    known = ", ".join(tokens) or "none"
    if config.panda.token_profile in tokens and tokens[config.panda.token_profile].per_ce:
        validator.problem("panda", f"token_profile: [tokens.{config.panda.token_profile}] keeps a token per CE "
                                   "(directory); PanDA needs a profile with file")
    for queue in config.queues.values():
        where = f"queues.{queue.name}"
        for key, per_ce in (("ce_token_profile", True), ("pilot_token_profile", False)):
            wanted = getattr(queue, key)
            if wanted is None:
                continue
            if wanted not in tokens:
                validator.problem(where, f"{key}: no [tokens.{wanted}] (configured: {known})")
            elif tokens[wanted].per_ce != per_ce:
                validator.problem(where, f"{key}: [tokens.{wanted}] " + (
                    "keeps one token (file); the CEs need a per-CE profile with directory" if per_ce else
                    "keeps a token per CE (directory); the pilots need one token for PanDA (file)"))
        if queue.pilot_token_profile in tokens and queue.pilot_token_key is not None and \
                tokens[queue.pilot_token_profile].file and \
                tokens[queue.pilot_token_profile].file.name == queue.pilot_token_key.name:
            validator.problem(where, "pilot_token_key: has the same file name as the pilot token; both travel "
                                     "with the job into one directory: rename one")
    files: dict[Path, str] = {}
    for kind, profiles in (("proxies", config.proxies), ("tokens", config.tokens)):
        for profile in profiles.values():
            path = profile.file if profile.file is not None else profile.directory
            other = files.setdefault(path, f"{kind}.{profile.name}")
            if other != f"{kind}.{profile.name}":
                key = "file" if profile.file is not None else "directory"
                validator.problem(f"{kind}.{profile.name}", f"{key}: {path} is also written by [{other}]")
    for queue in config.queues.values():
        if is_test_pilot(queue.pilot) and not config.panda.allow_test_pilot:
            validator.problem(f"queues.{queue.name}", "pilot: the simulator's test pilot runs every job's jobPars with "
                                                      "/bin/sh: name PanDA's pilot wrapper (see `harvester-cli config "
                                                      "example`), or set [panda] allow_test_pilot = true against "
                                                      "the simulator")
    if not config.harvester_id.strip():
        validator.problem("", "harvester_id: must not be empty")
    for i, entry in enumerate(config.downtimes.scheduled):
        if entry.queue is not None and entry.queue not in config.queues:
            validator.problem(f"downtimes.scheduled[{i}]", f"queue: no [queues.{entry.queue}] (configured: "
                                                           f"{', '.join(config.queues) or 'none'})")
