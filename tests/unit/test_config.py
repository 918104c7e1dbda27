"""Configuration validation: what an operator sees when the TOML file is wrong, and what a right one means."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from harvester_cli import config
from harvester_cli.errors import ConfigError

SOURCE = "/etc/harvester-cli/site.toml"


def minimal() -> dict:
    return {
        "harvester_id": "test-harvester",
        "panda": {"url": "https://127.0.0.1:9/api/v1"},
        "queues": {"Q": {"mode": "pull", "backend": "local", "pilot": "true"}},
    }


def parse(data: dict, base_dir: Path | None = None) -> config.Config:
    return config.parse(data, SOURCE, base_dir or Path("/srv/harvester"))


def error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith(SOURCE), f"error does not name the file: {message}"
    return message


def with_queue(**settings) -> dict:
    data = minimal()
    data["queues"]["Q"].update(settings)
    return data


# ---------------------------------------------------------------------------------------------
# A good configuration


def test_minimal_config_parses_with_defaults():
    cfg = parse(minimal())
    assert cfg.harvester_id == "test-harvester"
    assert cfg.panda.url == "https://127.0.0.1:9/api/v1"
    assert list(cfg.queues) == ["Q"]
    queue = cfg.queues["Q"]
    assert queue.name == "Q"
    assert (queue.mode, queue.backend) == ("pull", "local")
    assert queue.resource_types == ["SCORE"]
    assert queue.max_workers == 100
    assert queue.backend_options is not None and queue.backend_options.work_dir is None


def test_config_error_is_a_usage_error():
    with pytest.raises(ConfigError) as info:
        parse({})
    assert info.value.exit_code == 2


def test_example_config_parses():
    data = tomllib.loads(config.EXAMPLE)
    cfg = config.parse(data, "<example>", Path("/"))
    assert cfg.harvester_id == "my-site-harvester"
    assert "MY_SITE_PULL" in cfg.queues
    queue = cfg.queues["MY_SITE_PULL"]
    assert queue.mode == "pull" and queue.backend == "local"
    # queue_defaults from the example reach the queue
    assert queue.max_workers == 200 and queue.n_queue_limit_worker == 20
    assert cfg.sweep.worker_retention == 172800
    assert cfg.panda.proxy == Path("/var/lib/harvester-cli/proxy.pem")


# ---------------------------------------------------------------------------------------------
# Unknown keys: file, table and key named; a near miss gets a hint


def test_unknown_top_level_key_with_hint():
    data = minimal()
    data["harvester_idd"] = "x"
    message = error(data)
    assert "'harvester_idd'" in message
    assert "did you mean 'harvester_id'" in message


def test_unknown_top_level_key_without_near_miss_lists_known_keys():
    data = minimal()
    data["zzzzzz"] = 1
    message = error(data)
    assert "unknown key 'zzzzzz'" in message
    assert "did you mean" not in message
    assert "harvester_id" in message  # the known keys are listed instead


def test_unknown_key_in_panda():
    data = minimal()
    data["panda"]["timout"] = 10
    message = error(data)
    assert "[panda]" in message
    assert "'timout'" in message
    assert "did you mean 'timeout'" in message


def test_unknown_key_in_queue():
    message = error(with_queue(max_worker=5))
    assert "[queues.Q]" in message
    assert "'max_worker'" in message
    assert "did you mean 'max_workers'" in message


def test_unknown_key_in_backend_options():
    message = error(with_queue(backend_options={"workdir": "/tmp/x"}))
    assert "[queues.Q.backend_options]" in message
    assert "'workdir'" in message
    assert "did you mean 'work_dir'" in message


def test_unknown_key_in_sweep():
    data = minimal()
    data["sweep"] = {"worker_retension": 10}
    message = error(data)
    assert "[sweep]" in message
    assert "did you mean 'worker_retention'" in message


def test_unknown_key_in_queue_defaults_is_reported():
    data = minimal()
    data["queue_defaults"] = {"max_worker": 3}
    message = error(data)
    assert "'max_worker'" in message
    assert "did you mean 'max_workers'" in message


def test_queue_name_is_not_a_settable_key():
    message = error(with_queue(name="OTHER"))
    assert "[queues.Q]" in message and "'name'" in message


# ---------------------------------------------------------------------------------------------
# Types


def test_string_for_int_rejected():
    message = error(with_queue(max_workers="10"))
    assert "[queues.Q]" in message
    assert "max_workers" in message
    assert "expected an integer" in message


def test_bool_for_int_rejected():
    message = error(with_queue(max_workers=True))
    assert "max_workers" in message
    assert "expected an integer" in message


def test_float_for_int_rejected():
    message = error(with_queue(core_count=1.5))
    assert "core_count" in message and "expected an integer" in message


def test_int_accepted_for_float():
    cfg = parse(with_queue(activated_factor=2))
    assert cfg.queues["Q"].activated_factor == 2.0
    assert isinstance(cfg.queues["Q"].activated_factor, float)
    data = minimal()
    data["panda"]["timeout"] = 30
    cfg = parse(data)
    assert cfg.panda.timeout == 30.0 and isinstance(cfg.panda.timeout, float)


def test_bool_for_float_rejected():
    message = error(with_queue(activated_factor=True))
    assert "activated_factor" in message and "expected a number" in message


def test_string_for_float_rejected():
    data = minimal()
    data["panda"]["timeout"] = "60"
    message = error(data)
    assert "[panda]" in message and "timeout" in message and "expected a number" in message


def test_int_for_string_rejected():
    data = minimal()
    data["harvester_id"] = 5
    message = error(data)
    assert "harvester_id" in message and "expected a string" in message


def test_list_item_type_checked():
    message = error(with_queue(resource_types=["SCORE", 8]))
    assert "resource_types[1]" in message and "expected a string" in message


def test_string_for_list_rejected():
    message = error(with_queue(resource_types="SCORE"))
    assert "resource_types" in message and "expected a list" in message


def test_path_must_be_a_string():
    data = minimal()
    data["panda"]["proxy"] = 5
    message = error(data)
    assert "[panda]" in message and "proxy" in message and "path" in message


def test_panda_must_be_a_table():
    data = minimal()
    data["panda"] = "https://127.0.0.1:9/api/v1"
    message = error(data)
    assert "panda" in message and "expected a table" in message


def test_queue_must_be_a_table():
    data = minimal()
    data["queues"]["Q"] = "pull"
    message = error(data)
    assert "[queues.Q]" in message and "expected a table" in message


def test_backend_options_must_be_a_table():
    message = error(with_queue(backend_options="/tmp"))
    assert "[queues.Q]" in message and "backend_options" in message and "expected a table" in message


# ---------------------------------------------------------------------------------------------
# Required keys


def test_missing_harvester_id():
    data = minimal()
    del data["harvester_id"]
    message = error(data)
    assert "missing required key 'harvester_id'" in message


def test_empty_harvester_id():
    data = minimal()
    data["harvester_id"] = "  "
    message = error(data)
    assert "harvester_id" in message and "empty" in message


def test_missing_panda_table():
    data = minimal()
    del data["panda"]
    assert "missing required key 'panda'" in error(data)


def test_missing_panda_url():
    data = minimal()
    data["panda"] = {"timeout": 10}
    message = error(data)
    assert "[panda]" in message and "missing required key 'url'" in message


@pytest.mark.parametrize("key", ["mode", "backend"])
def test_missing_queue_mode_or_backend(key):
    data = minimal()
    del data["queues"]["Q"][key]
    message = error(data)
    assert "[queues.Q]" in message and f"missing required key {key!r}" in message


def test_no_queues_is_allowed():
    data = minimal()
    del data["queues"]
    assert parse(data).queues == {}


# ---------------------------------------------------------------------------------------------
# Values


def test_unknown_backend():
    message = error(with_queue(backend="slurmx"))
    assert "[queues.Q]" in message
    assert "backend: expected one of" in message and "got 'slurmx'" in message
    assert "local" in message  # the known backends are listed


def test_bad_mode():
    message = error(with_queue(mode="pul"))
    assert "[queues.Q]" in message and "mode" in message and "'pul'" in message
    assert "'pull'" in message and "'push'" in message


@pytest.mark.parametrize("key", ["n_queue_limit_worker", "max_workers", "max_new_workers_per_cycle", "core_count",
                                 "memory_mb_per_core", "walltime", "max_submit_attempts"])
def test_negative_queue_limit_rejected(key):
    message = error(with_queue(**{key: -1}))
    assert "[queues.Q]" in message and key in message and re.search("must not be negative|must be at least", message)


@pytest.mark.parametrize("key", ["n_queue_limit_job", "max_queued_seconds", "lost_grace_seconds"])
def test_negative_queue_limit_rejected_for_optional_limits(key):
    message = error(with_queue(**{key: -1}))
    assert "[queues.Q]" in message and key in message and re.search("must not be negative|must be at least", message)


@pytest.mark.parametrize("key", ["lease_seconds", "max_new_workers_per_run"])
def test_negative_global_limit_rejected(key):
    data = minimal()
    data[key] = -1
    message = error(data)
    assert key in message and re.search("must not be negative|must be at least", message)


@pytest.mark.parametrize("key", ["worker_retention", "job_retention", "max_kills_per_run"])
def test_negative_sweep_limit_rejected(key):
    data = minimal()
    data["sweep"] = {key: -1}
    message = error(data)
    assert "[sweep]" in message and key in message and "negative" in message


def test_zero_limits_are_allowed():
    cfg = parse(with_queue(max_workers=0, n_queue_limit_worker=0, max_new_workers_per_cycle=0))
    assert cfg.queues["Q"].max_workers == 0


def test_empty_pilot_floor_only_zero_or_one():
    message = error(with_queue(empty_pilot_floor=2))
    assert "empty_pilot_floor" in message


def test_empty_resource_types_rejected():
    message = error(with_queue(resource_types=[]))
    assert "resource_types" in message


def test_unknown_pilot_placeholder():
    message = error(with_queue(pilot="{python} -m mypilot --queue {nope}"))
    assert "[queues.Q]" in message
    assert "pilot" in message
    assert "{nope}" in message
    assert "queue" in message and "worker_id" in message  # the known placeholders are listed


@pytest.mark.parametrize("template", ["{python -m mypilot", "{python} -m mypilot }", "run {"])
def test_unbalanced_brace_in_pilot(template):
    message = error(with_queue(pilot=template))
    assert "[queues.Q]" in message
    assert "pilot" in message and "bad template" in message
    assert "{{" in message  # tells how to write a literal brace


def test_known_placeholders_and_literal_braces_accepted():
    pilot = "{python} -m p --queue {queue} --id {worker_id} --rt {resource_type} --json '{{\"a\": 1}}'"
    cfg = parse(with_queue(pilot=pilot))
    assert cfg.queues["Q"].pilot == pilot


def test_every_documented_placeholder_accepted():
    pilot = " ".join("{%s}" % name for name in sorted(config.PILOT_PLACEHOLDERS))
    assert parse(with_queue(pilot=pilot)).queues["Q"].pilot == pilot


# ---------------------------------------------------------------------------------------------
# queue_defaults


def test_queue_defaults_apply_and_queue_overrides():
    data = minimal()
    data["queue_defaults"] = {"max_workers": 7, "n_queue_limit_worker": 3, "resource_types": ["MCORE"]}
    data["queues"]["R"] = {"mode": "push", "backend": "local", "max_workers": 42, "pilot": "true"}
    cfg = parse(data)
    q, r = cfg.queues["Q"], cfg.queues["R"]
    assert q.max_workers == 7 and q.n_queue_limit_worker == 3 and q.resource_types == ["MCORE"]
    assert r.max_workers == 42  # the queue wins
    assert r.n_queue_limit_worker == 3 and r.resource_types == ["MCORE"]
    assert r.mode == "push"


def test_queue_defaults_can_supply_required_keys():
    data = minimal()
    data["queue_defaults"] = {"mode": "push", "backend": "local", "pilot": "true"}
    data["queues"] = {"A": {}, "B": {"mode": "pull"}}
    cfg = parse(data)
    assert cfg.queues["A"].mode == "push" and cfg.queues["B"].mode == "pull"


def test_queue_defaults_values_are_validated():
    data = minimal()
    data["queue_defaults"] = {"max_workers": "many"}
    message = error(data)
    assert "max_workers" in message and "expected an integer" in message


def test_queues_must_be_a_table():
    data = minimal()
    data["queues"] = ["Q"]
    message = error(data)
    assert "queues" in message


# ---------------------------------------------------------------------------------------------
# Paths


def test_relative_paths_resolve_against_config_dir(tmp_path):
    base = tmp_path / "etc"
    data = minimal()
    data["log_dir"] = "logs"
    data["work_dir"] = "work"
    data["panda"]["proxy"] = "x509/proxy.pem"
    data["panda"]["ca"] = "certificates"
    data["queues"]["Q"]["backend_options"] = {"work_dir": "qwork"}
    cfg = config.parse(data, str(base / "c.toml"), base)
    assert cfg.log_dir == base / "logs"
    assert cfg.logs == base / "logs"
    assert cfg.work_root == base / "work"
    assert cfg.panda.proxy == base / "x509" / "proxy.pem"
    assert cfg.panda.ca == base / "certificates"
    assert cfg.queues["Q"].backend_options.work_dir == base / "qwork"


def test_absolute_and_home_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = minimal()
    data["log_dir"] = "/var/log/hc"
    data["panda"]["proxy"] = "~/proxy.pem"
    cfg = config.parse(data, "c.toml", tmp_path / "etc")
    assert cfg.log_dir == Path("/var/log/hc")
    assert cfg.panda.proxy == tmp_path / "home" / "proxy.pem"


def test_load_resolves_relative_paths_against_config_file(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = conf_dir / "config.toml"
    path.write_text(
        'harvester_id = "h"\nlog_dir = "logs"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
        '[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.load(path)
    assert cfg.log_dir == conf_dir / "logs"


def test_relative_sqlite_state_resolves_against_config_dir(tmp_path, monkeypatch):
    """A plain state path in the file means the same database whatever the current directory (cron runs in $HOME)."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = conf_dir / "config.toml"
    path.write_text(
        'harvester_id = "h"\nstate = "state.db"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.load(path)
    assert cfg.state_url == f"sqlite:///{conf_dir / 'state.db'}"


@pytest.mark.parametrize("written,used", [
    ("postgresql://harvester@dbhost/harvester", "postgresql+psycopg://harvester@dbhost/harvester"),
    ("postgres://harvester@dbhost/harvester", "postgresql+psycopg://harvester@dbhost/harvester"),
    ("postgresql+psycopg2://harvester@dbhost/harvester", "postgresql+psycopg2://harvester@dbhost/harvester"),
    ("mariadb://harvester:pw@dbhost/harvester", "mariadb+pymysql://harvester:pw@dbhost/harvester"),
    ("mysql://harvester@dbhost:3306/harvester", "mysql+pymysql://harvester@dbhost:3306/harvester"),
    ("mysql+pymysql://harvester@dbhost/harvester", "mysql+pymysql://harvester@dbhost/harvester"),
])
def test_state_url_gets_the_installed_driver_unless_one_is_named(written, used):
    data = minimal()
    data["state"] = written
    assert parse(data).state_url == used


@pytest.mark.parametrize("written,used", [
    ("postgresql://h:pw@db1:5432,db2:5433/harvester?target_session_attrs=read-write",
     "postgresql+psycopg://h:pw@/harvester?host=db1:5432&host=db2:5433&target_session_attrs=read-write"),
    ("postgresql://h@/harvester?host=db1,db2&port=5432&target_session_attrs=primary",
     "postgresql+psycopg://h@/harvester?host=db1:5432&host=db2:5432&target_session_attrs=primary"),
    ("host=db1,db2 port=5432,5433 dbname=harvester user=h password='a b\\'c' target_session_attrs=read-write",
     "postgresql+psycopg://h:a%20b%27c@/harvester?host=db1:5432&host=db2:5433&target_session_attrs=read-write"),
    ("host=db1 dbname=harvester user=h", "postgresql+psycopg://h@db1/harvester"),
    ("postgresql://h@[::1]:5432,[::2]:5433/harvester?target_session_attrs=read-write",
     "postgresql+psycopg://h@/harvester?host=::1,::2&port=5432,5433&target_session_attrs=read-write"),
])
def test_state_takes_libpqs_several_hosts_in_each_of_its_forms(written, used):
    data = minimal()
    data["state"] = written
    assert parse(data).state_url == used


def test_the_several_hosts_are_listed_in_libpqs_order_and_no_password_is_shown():
    from harvester_cli.config.state_url import servers

    url = config.state_url_from("host=db1,db2 port=5432,5433 dbname=h user=u password=s3cret "
                                "target_session_attrs=read-write")
    assert servers(url) == ["db1:5432", "db2:5433"]
    assert "s3cret" not in config.display_url(url) and "host=db1:5432&host=db2:5433" in config.display_url(url)
    assert "s3cret" not in config.display_url(url + "&password=s3cret")
    assert servers(config.state_url_from("postgresql://u@[::1]:1,[::2]:2/h?target_session_attrs=read-write")) == \
        ["[::1]:1", "[::2]:2"]


@pytest.mark.parametrize("written,says", [
    ("postgresql://h:pw@db1,db2/harvester", "several hosts need target_session_attrs=read-write"),
    ("postgresql://h@db1,db2/harvester?target_session_attrs=any", "several hosts need target_session_attrs"),
    ("mariadb://h:pw@db1,db2/harvester", "MariaDB/MySQL takes one server"),
    ("host=db1,db2 port=1,2,3 dbname=h target_session_attrs=read-write", "2 hosts and 3 ports"),
    ("host=db1 dbname=h colour=blue", "'colour' is not a libpq connection keyword"),
    ("postgresql://h@db1,db2/harvester?host=db3&target_session_attrs=read-write", "give them once"),
])
def test_a_state_harvester_cli_cannot_use_is_refused_without_its_password(written, says):
    data = minimal()
    data["state"] = written
    message = error(data)
    assert "state" in message and says in message and "pw@" not in message


def test_a_keyword_form_state_is_a_server_not_a_file_beside_the_config(tmp_path):
    data = minimal()
    data["state"] = "host=db1 dbname=harvester user=h"
    assert parse(data, tmp_path).state_url == "postgresql+psycopg://h@db1/harvester"


def test_default_state_under_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    cfg = parse(minimal())
    assert cfg.state_url == f"sqlite:///{tmp_path / 'st' / 'harvester-cli' / 'state.db'}"
    assert cfg.logs == tmp_path / "st" / "harvester-cli" / "logs"


# ---------------------------------------------------------------------------------------------
# Credentials


def test_proxy_and_token_file_together_rejected():
    data = minimal()
    data["panda"].update(proxy="/p.pem", token_file="/t", token_origin="atlas")
    message = error(data)
    assert "[panda]" in message and "proxy" in message and "token_file" in message


def test_token_file_without_origin_rejected():
    data = minimal()
    data["panda"]["token_file"] = "/t"
    message = error(data)
    assert "[panda]" in message and "token_origin" in message


def test_token_file_with_origin_accepted():
    data = minimal()
    data["panda"].update(token_file="/t", token_origin="atlas")
    cfg = parse(data)
    assert cfg.panda.token_file == Path("/t") and cfg.panda.token_origin == "atlas"


# ---------------------------------------------------------------------------------------------
# select_queues


def test_select_unknown_queue_names_it_and_the_known_ones():
    cfg = parse(minimal())
    with pytest.raises(ConfigError) as info:
        cfg.select_queues(("NOPE",))
    assert "'NOPE'" in str(info.value) and "Q" in str(info.value)
    assert [q.name for q in cfg.select_queues()] == ["Q"]


# ---------------------------------------------------------------------------------------------
# load()


GOOD_TOML = 'harvester_id = "h"\n[panda]\nurl = "https://127.0.0.1:9/api/v1"\n[queues.Q]\nmode = "pull"\nbackend = "local"\npilot = "true"\n'


def test_load_good_file_records_path(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD_TOML)
    cfg = config.load(path)
    assert cfg.path == path
    assert cfg.harvester_id == "h"


def test_load_missing_explicit_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "no such configuration file" in message


def test_load_invalid_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('harvester_id = "h\n[panda\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "TOML" in message
    assert "\n" not in message


def test_load_validation_error_names_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD_TOML + "max_worker = 3\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "[queues.Q]" in message and "did you mean 'max_workers'" in message


def test_load_directory_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_default_path_under_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.default_config_path() == tmp_path / "xdg" / "harvester-cli" / "config.toml"


def test_default_path_falls_back_to_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.default_config_path() == tmp_path / ".config" / "harvester-cli" / "config.toml"


def test_load_default_missing_says_config_example(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ConfigError) as info:
        config.load(None)
    message = str(info.value)
    assert str(tmp_path / "xdg" / "harvester-cli" / "config.toml") in message
    assert "config example" in message
    assert "--config" in message


def test_load_default_file_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "harvester-cli" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(GOOD_TOML)
    cfg = config.load(None)
    assert cfg.path == path and cfg.harvester_id == "h"


# ---------------------------------------------------------------------------------------------
# as_dict


def test_as_dict_is_resolved_and_plain(tmp_path):
    import json

    data = minimal()
    data["state"] = str(tmp_path / "s.db")
    data["log_dir"] = "logs"
    cfg = config.parse(copy.deepcopy(data), "c.toml", tmp_path)
    resolved = config.as_dict(cfg)
    json.dumps(resolved)  # plain JSON-able data
    assert resolved["state"] == f"sqlite:///{tmp_path / 's.db'}"
    assert resolved["log_dir"] == str(tmp_path / "logs")
    assert resolved["queues"]["Q"]["max_workers"] == 100
    assert resolved["queues"]["Q"]["backend_options"] == {"work_dir": None}
    assert re.match(r"https://", resolved["panda"]["url"])


# ---------------------------------------------------------------------------------------------
# Values that make no sense: refused when the file is read, one line each, every problem at once


@pytest.mark.parametrize("section,key,value,needle", [
    ("panda", "timeout", 0, "timeout: must be more than 0"),
    ("panda", "timeout", float("inf"), "timeout: must be a finite number"),
    ("panda", "bulk_size", 0, "bulk_size: must be at least 1"),
    ("panda", "url", "http://panda.example.org/api/v1", "url: expected an https:// URL"),
    ("panda", "url", "panda.example.org/api/v1", "url: expected an https:// URL"),
    ("queue", "status", "Online", "did you mean 'online'"),
    ("queue", "status", "ofline", "did you mean 'offline'"),
    ("queue", "max_workers", 2**40, "max_workers: must be at most"),
    ("queue", "core_count", 0, "core_count: must be at least 1"),
    ("top", "lease_seconds", 0, "lease_seconds: must be at least 10"),
])
def test_values_that_make_no_sense_are_refused(section, key, value, needle):
    data = minimal()
    target = {"panda": data["panda"], "queue": data["queues"]["Q"], "top": data}[section]
    target[key] = value
    message = error(data)
    assert needle in message and len(message.splitlines()) == 1, message


def test_every_problem_is_reported_at_once_one_line_each():
    data = minimal()
    data["panda"]["timeout"] = 0
    data["panda"]["bulk_size"] = 0
    data["queues"]["Q"]["status"] = "Online"
    data["queues"]["R"] = {"mode": "pul", "backend": "local", "max_workers": -1, "pilot": "true"}
    data["lease_seconds"] = "600"
    lines = error(data).splitlines()
    assert len(lines) == 6, lines
    assert all(line.startswith(SOURCE + ": ") for line in lines)
    for needle in ("[panda] timeout", "[panda] bulk_size", "[queues.Q] status", "[queues.R] mode",
                   "[queues.R] max_workers", "lease_seconds: expected an integer"):
        assert any(needle in line for line in lines), (needle, lines)


@pytest.mark.parametrize("queues", [[1, 2], "Q", 3])
def test_queues_that_is_not_a_table(queues):
    data = minimal()
    data["queues"] = queues
    assert "queues: must be a table" in error(data)


def test_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'harvester_id = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert "not UTF-8" in str(info.value) and str(path) in str(info.value)


def test_environment_problems_name_missing_files_loose_secrets_and_missing_credentials(tmp_path):
    secret = tmp_path / "client.secret"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    data = minimal()
    data["panda"]["ca"] = str(tmp_path / "no-such-ca")
    data["tokens"] = {"ce": {"file": "t", "endpoint": "https://iam.example.org/token", "client_id": "c",
                             "client_secret_file": str(secret)}}
    cfg = config.parse(data, SOURCE, tmp_path)
    problems = config.environment_problems(cfg)
    assert any("[panda] ca:" in p and "no-such-ca" in p and "No such file" in p for p in problems), problems
    assert any("[tokens.ce] client_secret_file:" in p and "chmod 600" in p for p in problems), problems
    assert any("[panda] no credentials" in p for p in problems), problems
    data = minimal()
    data["queues"] = {}
    data["panda"]["proxy"] = str(secret)
    secret.chmod(0o600)
    problems = config.environment_problems(config.parse(data, SOURCE, tmp_path))
    assert len(problems) == 1 and problems[0].endswith(": no queues: add one, e.g. [queues.MY_QUEUE] with mode and "
                                                       "backend (`harvester-cli config example` shows one)")


def test_reference_document_is_generated_from_the_schema():
    from harvester_cli.config import reference

    assert reference.REFERENCE_FILE.read_text() == reference.markdown(), \
        "docs/configuration.md is stale: harvester-cli config keys --markdown > docs/configuration.md"


def test_readme_tables_name_only_keys_the_schema_knows_with_their_defaults():
    """Every key a README table row names exists in the schema, and a single default it shows is the schema's."""
    from harvester_cli.config import reference

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    readme = readme[readme.index("## Configuration"):readme.index("## How many workers")]
    known = {k.key: k.default for k in reference.keys()}
    rows = re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \| ([^|]+) \|", readme, re.M)
    assert len(rows) > 30, "the README lost its configuration tables"
    for names, default in rows:
        names = re.findall(r"`([a-z_]+)`", names)
        for name in names:
            assert name in known, f"README names {name!r}, which the configuration schema does not know"
        if len(names) == 1 and re.fullmatch(r"-?\d+(\.\d+)?", default.strip()):
            assert float(default) == float(known[names[0]].strip("'")), (names[0], default, known[names[0]])


def test_every_queue_key_is_in_the_readme_queue_table():
    from harvester_cli.config import reference

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for key in reference.keys():
        if key.table == "[queues.NAME] and [queue_defaults]":
            assert f"`{key.key}`" in readme, key.key



# Every numeric setting's range as validation must enforce it, written out here (not read from the schema):
# a bound lost from the schema, or a minimum of 0 no longer checked, fails a test, not only the generated
# docs' comparison. `> X`: more than X; INT_MAX: what the database's integer holds; none: no upper bound.
RANGES = """
lease_seconds 10 INT_MAX                     max_new_workers_per_run 0 INT_MAX
panda.timeout >0 3600                        panda.retries 0 20
panda.bulk_size 1 10000                      panda.stats_refresh 0 3600
queues.core_count 1 100000                   queues.memory_mb_per_core 1 10000000
queues.walltime 60 INT_MAX                   queues.n_queue_limit_worker 0 INT_MAX
queues.n_queue_limit_worker_ratio 0 100000   queues.n_queue_limit_worker_min 0 INT_MAX
queues.max_workers 0 INT_MAX                 queues.max_new_workers_per_cycle 0 INT_MAX
queues.max_queued_cores 0 INT_MAX            queues.max_queued_memory_mb 0 INT_MAX
queues.retire_max_per_run 0 100000           queues.retire_min_age 60 INT_MAX
caps.max_queued 0 INT_MAX                    caps.max_running 0 INT_MAX
caps.max_cores 0 INT_MAX
queues.many_to_one.nodes_min 1 100000       queues.many_to_one.nodes_max 1 100000
queues.many_to_one.jobs_per_node 1 10000     queues.many_to_one.cores_per_job 1 100000
queues.many_to_one.fill_timeout 0 604800     queues.many_to_one.walltime_margin 0 604800
queues.throttle_missed 0 INT_MAX             queues.throttle_window 1 INT_MAX
queues.activated_factor 0 1000               queues.empty_pilot_floor 0 1
queues.n_queue_limit_job 0 INT_MAX           queues.max_submit_attempts 1 INT_MAX
queues.job_heartbeat_seconds 0 INT_MAX       queues.max_queued_seconds 60 INT_MAX
queues.lost_grace_seconds 0 INT_MAX          sweep.worker_retention 0 INT_MAX
queues.free_resources_max_age 1 INT_MAX      queues.queued_when_full 0 100000
queues.min_walltime 60 INT_MAX
sweep.job_retention 0 INT_MAX                sweep.max_kills_per_run 0 INT_MAX
sweep.history_retention 3600 INT_MAX         proxies.lifetime 600 INT_MAX
proxies.min_lifetime 0 INT_MAX               proxies.bits 0 INT_MAX
proxies.timeout >0 3600                      tokens.min_lifetime 0 INT_MAX
tokens.timeout >0 3600                       tokens.retries 0 20
smtp.port 1 65535                            smtp.throttle 0 INT_MAX
smtp.timeout >0 3600                         smtp.retries 0 20
log_retention.CLASS.max_age 0 INT_MAX        log_retention.CLASS.max_bytes 0 none
command_log.max_bytes >0 none                command_log.backups 0 1000
cron.alert_after 0 604800                    log_server.port 0 65535
log_server.max_connections 8 100000          log_server.threads 1 256
log_server.header_timeout >0 3600            log_server.idle_timeout >0 3600
metrics.panda_interval 0 86400               instance.cycle_interval 0 86400
instance.db_timeout 1 86400                  instance.db_reconnect_seconds 0 86400
queues.backend_options.htcondor.max_at_once 1 INT_MAX
queues.backend_options.htcondor.ce_fair_share 0 1
queues.backend_options.htcondor.ce_stats_window 60 INT_MAX
queues.backend_options.htcondor.ce_backoff_seconds 0 INT_MAX
queues.backend_options.htcondor.ce_backoff_failures 1 INT_MAX
queues.backend_options.htcondor.held_timeout 0 INT_MAX
queues.backend_options.htcondor.unavailable_timeout 0 INT_MAX
queues.backend_options.htcondor.removed_timeout 0 INT_MAX
queues.backend_options.htcondor.history_window 60 INT_MAX
queues.backend_options.htcondor.disk_mb_per_core 0 INT_MAX
queues.backend_options.arc.timeout >0 3600
queues.backend_options.arc.delegation_min_lifetime 0 INT_MAX
queues.backend_options.slurm.nodes 1 100000
queues.backend_options.slurm.max_array_size 1 1000000
queues.backend_options.slurm.max_concurrent_sbatch 1 256
queues.backend_options.slurm.command_timeout >0 3600
queues.backend_options.slurm.squeue_cache_seconds 0 3600
queues.backend_options.slurm.history_window 60 INT_MAX
queues.backend_options.slurm.ssh_port 1 65535
queues.backend_options.slurm.connect_timeout >0 600
queues.backend_options.slurm.control_persist 1 3600
queues.backend_options.slurm.ce_fair_share 0 1
queues.backend_options.slurm.ce_stats_window 60 INT_MAX
queues.backend_options.slurm.ce_backoff_seconds 0 INT_MAX
queues.backend_options.slurm.ce_backoff_failures 1 INT_MAX
"""


def _numeric_settings() -> dict:
    """Dotted key -> (section class, key, number type) of every numeric setting in every table."""
    import dataclasses
    import typing

    from harvester_cli.config import reference
    from harvester_cli.config.schema import rule_of

    out = {}
    for _, cls, prefix in reference.TABLES:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if t in (int, float)]
            if rule_of(f) is not None and kinds and f.init:
                out[f"{prefix}.{f.name}" if prefix else f.name] = (cls, f.name, kinds[0])
    return out


def _ranges() -> dict:
    words = RANGES.split()
    return {words[i]: (words[i + 1], words[i + 2]) for i in range(0, len(words), 3)}


def test_every_numeric_setting_has_its_range_written_in_this_test():
    assert sorted(_numeric_settings()) == sorted(_ranges()), "a numeric setting was added or removed: add its range"


@pytest.mark.parametrize("path", sorted(_ranges()))
def test_every_numeric_setting_refuses_what_is_out_of_its_range_and_takes_both_ends(path):
    """Validation itself checks each bound: no number is negative (a minimum of 0 included), a lowest value
    above 0 refuses what is below it, a `> 0` refuses 0, and the highest value is taken, one more refused."""
    from harvester_cli.config.schema import INT_MAX, Validator

    cls, key, kind = _numeric_settings()[path]
    low, high = _ranges()[path]

    def refused(value) -> str | None:
        validator = Validator(SOURCE, Path("/srv"))
        return None if validator.key_of(cls, key, kind(value), "T") else "\n".join(validator.problems)

    step = 1 if kind is int else 0.5
    for negative in (-1, -step):
        problem = refused(negative)
        assert problem is not None, f"{path} = {negative} is accepted"
        assert key in problem and re.search("must not be negative|must be at least|must be more than", problem)
    if low.startswith(">"):
        bound = float(low[1:])
        assert refused(bound) is not None, f"{path} = {bound:g} is accepted (must be more than {bound:g})"
        lowest = bound + step
    else:
        lowest = float(low)
        if lowest > 0:
            assert refused(lowest - step) is not None, f"{path} = {lowest - step:g} is accepted (lowest {low})"
    assert refused(lowest) is None, f"{path} = {lowest:g} is refused: {refused(lowest)}"
    if high != "none":
        highest = INT_MAX if high == "INT_MAX" else float(high)
        assert refused(highest) is None, f"{path} = {highest:g}, its highest value, is refused"
        assert refused(highest + 1) is not None, f"{path} = {highest:g} + 1 is accepted"


# ---------------------------------------------------------------------------------------------
# `config keys WORD...`: which keys an operator's words name


def _paths(*terms: str) -> list[str]:
    from harvester_cli.config import reference

    return [key.path for key in reference.matching(terms)]


def test_config_keys_without_words_lists_every_key():
    from harvester_cli.config import reference

    assert reference.matching([]) == reference.keys()


@pytest.mark.parametrize("word", ["panda", "[panda]", "PANDA"])
def test_a_table_name_lists_exactly_its_keys_however_it_is_written(word):
    from harvester_cli.config import reference

    assert _paths(word) == [k.path for k in reference.keys() if k.path.startswith("panda.")]


@pytest.mark.parametrize("word,path", [
    ("max_workers", "queues.max_workers"),
    ("MAX_WORKERS", "queues.max_workers"),
    ("queues.max_workers", "queues.max_workers"),
    ("queue_defaults.max_workers", "queues.max_workers"),
    ("panda.url", "panda.url"),
    ("slurm.nodes", "queues.backend_options.slurm.nodes"),
    ("queues.backend_options.slurm.nodes", "queues.backend_options.slurm.nodes"),
])
def test_a_key_is_found_by_its_own_name_its_dotted_name_and_its_queue_defaults_name(word, path):
    assert _paths(word) == [path]


def test_queue_defaults_lists_the_keys_of_a_queue():
    from harvester_cli.config import reference

    assert set(_paths("queue_defaults")) == {k.path for k in reference.keys() if k.path.startswith("queues.")}


@pytest.mark.parametrize("backend", ["htcondor", "slurm", "arc", "local"])
def test_a_backends_name_lists_its_options_and_only_them(backend):
    from harvester_cli.config import reference

    prefix = f"queues.backend_options.{backend}."
    assert _paths(backend) == [k.path for k in reference.keys() if k.path.startswith(prefix)]


@pytest.mark.parametrize("word,prefix", [
    ("queues.backend_options.slurm", "queues.backend_options.slurm."),
    ("queue_defaults.backend_options.arc", "queues.backend_options.arc."),
    ("log_retention.CLASS", "log_retention.CLASS."),
])
def test_a_dotted_table_name_lists_the_keys_under_it(word, prefix):
    from harvester_cli.config import reference

    assert _paths(word) == [k.path for k in reference.keys() if k.path.startswith(prefix)]


def test_a_backends_list_table_lists_the_keys_of_its_entries():
    assert _paths("htcondor.ces") == ["queues.backend_options.htcondor.ces"] + [
        f"queues.backend_options.htcondor.ces.{key}" for key in ("endpoint", "flavour", "queue", "state")]


def test_several_words_list_each_key_once_in_the_order_asked():
    paths = _paths("smtp.host", "panda", "panda.url")
    assert paths[0] == "smtp.host" and "panda.url" in paths and len(paths) == len(set(paths))
    assert set(paths[1:]) == set(_paths("panda"))


@pytest.mark.parametrize("word", ["", "[]"])
def test_an_empty_word_names_no_key(word):
    from harvester_cli.config import reference

    with pytest.raises(ValueError, match="no configuration key or table"):
        reference.matching([word])


def test_a_word_that_names_no_key_gets_the_nearest_names():
    from harvester_cli.config import reference

    with pytest.raises(ValueError) as info:
        reference.matching(["panda", "Max_Wrkers"])
    assert str(info.value) == ("no configuration key or table 'Max_Wrkers' "
                               "(did you mean max_workers, max_cores, queues.max_workers?)")
    with pytest.raises(ValueError) as info:
        reference.matching(["zzzzqqqq"])
    assert str(info.value) == "no configuration key or table 'zzzzqqqq'"


# ---------------------------------------------------------------------------------------------
# `state`: libpq's keyword/value form, the servers `config check` shows, what a wrong one says


@pytest.mark.parametrize("written,used", [
    ("host=db1 dbname=h", "postgresql+psycopg://db1/h"),
    ("host=db1 user=u", "postgresql+psycopg://u@db1/"),
    ("host=db1 dbname=", "postgresql+psycopg://db1/"),
    ("host = db1  dbname = h user=Xavier", "postgresql+psycopg://Xavier@db1/h"),
    ("host=db1 port=5433 dbname=h user=svc/h password=a/b sslmode=verify-full application_name=a:b,c",
     "postgresql+psycopg://svc%2Fh:a%2Fb@db1:5433/h?sslmode=verify-full&application_name=a:b,c"),
    ("host=db1 dbname=h password=a\\ b\\\\c", "postgresql+psycopg://:a%20b%5Cc@db1/h"),
    ("host=db1 dbname=h password=a\\b", "postgresql+psycopg://:ab@db1/h"),
    ("host=db1 dbname=h password=ab\\", "postgresql+psycopg://:ab%5C@db1/h"),
    ("host=::1 port=5433 dbname=h", "postgresql+psycopg:///h?host=::1&port=5433"),
    ("host=/var/run/postgresql dbname=h", "postgresql+psycopg:///h?host=/var/run/postgresql"),
    ("postgresql://u@db1,db2/h?target_session_attrs=read-write",
     "postgresql+psycopg://u@/h?host=db1&host=db2&target_session_attrs=read-write"),
    ("postgresql://u@db1,db2?target_session_attrs=read-write",
     "postgresql+psycopg://u@/?host=db1&host=db2&target_session_attrs=read-write"),
])
def test_state_in_libpqs_keyword_form_quotes_what_a_url_needs_and_keeps_the_rest(written, used):
    """A single host goes in the URL's netloc; an IPv6 address or a socket directory (one host, so no
    target_session_attrs needed) goes in ?host=, where its colons and slashes cannot be misread."""
    assert config.state_url_from(written) == used


@pytest.mark.parametrize("written,says", [
    ("host=db1 dbname=h password='ab\\'", "unterminated quoted value"),
    ("host=db1 dbname=h password='abc", "unterminated quoted value"),
    ("host=db1 dbname=h password='abc\\", "unterminated quoted value"),
    ("host=db1 !!!!", "expected keyword=value at '!!!!'"),
    ("host=db1 dbname=h 0123456789012345678901234567890", "expected keyword=value at '01234567890123456789'"),
    ("host=db1, dbname=h target_session_attrs=read-write",
     "host=db1, port=: an empty host or a port that is not a number"),
    ("host=db1,db2 port=1,2,3 dbname=h target_session_attrs=read-write",
     "2 hosts and 3 ports: give one port, or one per host"),
    ("postgresql://u@db1:abc,db2/h?target_session_attrs=read-write", "'db1:abc' is not a host[:port]"),
    ("host=db1,db2 dbname=h", "several hosts need target_session_attrs=read-write (or primary): harvester-cli "
                              "writes, and libpq otherwise takes the first host that answers, a standby included"),
])
def test_a_state_that_cannot_be_read_says_where_and_why(written, says):
    with pytest.raises(ConfigError) as info:
        config.state_url_from(written)
    message = str(info.value)
    assert message.startswith("state: ") and message.endswith(": " + says), message


def test_a_refused_state_hides_the_password_of_either_form():
    from harvester_cli.config.state_url import state_url_problem

    assert state_url_problem("host=db1,db2 dbname=h password=s3cret").startswith(
        "host=db1,db2 dbname=h password=***: several hosts")
    assert state_url_problem("postgresql://u:pw@db1,db2/h").startswith("postgresql://u:***@db1,db2/h: several")
    assert state_url_problem("mariadb://u:pw@db1,db2/h").startswith("mariadb://u:***@db1,db2/h: MariaDB/MySQL")


@pytest.mark.parametrize("written,says", [
    ("", "empty: a SQLite file path or a database URL"),
    ("  ", "empty: a SQLite file path or a database URL"),
    ("oracle://u@db/h", "unknown database scheme oracle://: a SQLite file path, or a postgresql://, mariadb://, "
                        "mysql:// or sqlite:/// URL"),
])
def test_a_state_of_no_known_kind_says_what_is_taken(written, says):
    from harvester_cli.config.state_url import state_url_problem

    assert state_url_problem(written) == says


@pytest.mark.parametrize("written", ["postgresql://u@db1/h?application_name=http://x", "state.db", "dbname=h user=u",
                                     "host=/var/run/postgresql dbname=h"])
def test_a_good_state_has_no_problem(written):
    from harvester_cli.config.state_url import state_url_problem

    assert state_url_problem(written) is None


@pytest.mark.parametrize("url,shown", [
    ("postgresql+psycopg://u:pw@db1:5432/h", ["db1:5432"]),
    ("postgresql+psycopg://u:p@ss@db1/h", ["db1"]),
    ("postgresql+psycopg://u@db1:5432/h?application_name=http://x", ["db1:5432"]),
    ("postgresql+psycopg://u@/h", []),
    ("postgresql+psycopg://u@/h?host=/var/run/postgresql", ["/var/run/postgresql"]),
    ("postgresql+psycopg://u@/h?host=::1,::2&port=,&target_session_attrs=read-write", ["::1", "::2"]),
    ("sqlite:////var/lib/harvester-cli/state.db", []),
])
def test_config_check_shows_each_server_once_with_its_port_when_one_is_given(url, shown):
    from harvester_cli.config.state_url import servers

    assert servers(url) == shown


def test_config_check_shows_the_port_of_a_single_ipv6_server():
    from harvester_cli.config.state_url import servers

    assert servers(config.state_url_from("host=fe80::1 port=6432 dbname=h user=u")) == ["[fe80::1]:6432"]


# ---------------------------------------------------------------------------------------------
# `config check` on this host: files, directories, the state database, login nodes, client libraries


def _on_this_host(tmp_path: Path, **top) -> dict:
    """A configuration whose every file and directory is in tmp_path, as they should be."""
    proxy = tmp_path / "proxy.pem"
    proxy.write_text("proxy")
    proxy.chmod(0o600)
    data = minimal()
    data["panda"]["proxy"] = str(proxy)
    data.update(state=str(tmp_path / "state.db"), log_dir=str(tmp_path / "logs"), work_dir=str(tmp_path / "work"))
    data.update(top)
    return data


def _host_problems(data: dict, tmp_path: Path, **kwargs) -> list[str]:
    return config.environment_problems(config.parse(data, SOURCE, tmp_path), **kwargs)


def test_a_configuration_this_host_can_run_has_no_problem(tmp_path):
    ca = tmp_path / "ca"
    ca.mkdir()
    data = _on_this_host(tmp_path)
    data["panda"]["ca"] = str(ca)
    data["proxies"] = {"p": {"file": "p.pem", "ca": str(ca), "vomses": str(ca),
                             "certificates": [{"cert": "proxy.pem", "key": "proxy.pem"}]}}
    assert _host_problems(data, tmp_path) == []


def test_a_problem_names_the_configuration_file_or_says_it_has_none(tmp_path):
    import dataclasses

    data = _on_this_host(tmp_path)
    data["queues"] = {}
    cfg = config.parse(data, SOURCE, tmp_path)
    assert config.environment_problems(cfg)[0].startswith("<config>: no queues")
    loaded = dataclasses.replace(cfg, path=tmp_path / "site.toml")
    assert config.environment_problems(loaded)[0].startswith(f"{tmp_path / 'site.toml'}: no queues")


def test_a_file_or_directory_of_the_wrong_kind_is_named_with_the_kind_it_must_be(tmp_path):
    a_file = tmp_path / "proxy.pem"
    data = _on_this_host(tmp_path)
    data["panda"]["proxy"] = str(tmp_path)
    data["proxies"] = {"p": {"file": "p.pem", "ca": str(a_file), "vomsdir": str(tmp_path / "missing"),
                             "certificates": [{"cert": "proxy.pem", "key": "missing.key"}]}}
    problems = _host_problems(data, tmp_path)
    assert f"<config>: [panda] proxy: {tmp_path} is not a file" in problems
    assert f"<config>: [proxies.p] ca: {a_file} is not a directory" in problems
    assert (f"<config>: [proxies.p] vomsdir: {tmp_path / 'missing'}: No such file or directory; create it or fix "
            "the path") in problems
    assert (f"<config>: [proxies.p.certificates[0]] key: {tmp_path / 'missing.key'}: No such file or directory; "
            "create it or fix the path") in problems


def test_the_smtp_password_file_is_a_secret(tmp_path):
    password = tmp_path / "smtp.pw"
    password.write_text("pw")
    password.chmod(0o640)
    problems = _host_problems(_on_this_host(tmp_path, smtp={"password_file": str(password)}), tmp_path)
    assert problems == [f"<config>: [smtp] password_file: {password} is readable by others (mode 0640): "
                        f"chmod 600 {password}"]


def test_without_credentials_config_check_says_which_keys_give_them(tmp_path):
    data = _on_this_host(tmp_path)
    del data["panda"]["proxy"]
    assert _host_problems(data, tmp_path) == [
        "<config>: [panda] no credentials: PanDA needs a client certificate or a token; set proxy (or "
        "proxy_profile), or token_file (or token_profile) with token_origin"]


def test_a_queue_whose_client_library_is_missing_names_the_extra_to_install(tmp_path, monkeypatch):
    from harvester_cli.config import backend_options

    monkeypatch.setattr(backend_options, "CLIENT_LIBRARIES", {
        "htcondor": ("no_such_module_for_htcondor", "htcondor", "HTCondor's Python bindings"),
        "arc": ("no_such_package_for_arc.rest", "arc", "pyarcrest, the ARC REST client")})
    data = _on_this_host(tmp_path)
    data["queues"] = {"A": {"mode": "pull", "backend": "local", "pilot": "true"},
                      "B": {"mode": "pull", "backend": "htcondor", "pilot": "true"},
                      "C": {"mode": "pull", "backend": "arc", "pilot": "true",
                            "backend_options": {"endpoints": ["https://arc.example.org/arex"]}}}
    assert _host_problems(data, tmp_path) == [
        "<config>: [queues.B] backend = \"htcondor\": HTCondor's Python bindings (module "
        "no_such_module_for_htcondor) is not installed: pip install 'harvester-cli[htcondor]' ('.[htcondor]' in a "
        "source checkout)",
        "<config>: [queues.C] backend = \"arc\": pyarcrest, the ARC REST client (module "
        "no_such_package_for_arc.rest) is not installed: pip install 'harvester-cli[arc]' ('.[arc]' in a source "
        "checkout)"]
    monkeypatch.setattr(backend_options, "CLIENT_LIBRARIES", {"htcondor": ("json", "htcondor", "the JSON module")})
    assert _host_problems(data, tmp_path) == []


def test_a_log_or_work_directory_that_cannot_be_made_is_named_with_what_is_in_the_way(tmp_path):
    (tmp_path / "plain").write_text("")
    data = _on_this_host(tmp_path, log_dir=str(tmp_path / "plain" / "logs"), work_dir=str(tmp_path / "plain"))
    data["queues"]["Q"]["backend_options"] = {"work_dir": str(tmp_path / "plain" / "q")}
    assert _host_problems(data, tmp_path) == [
        f"<config>: log_dir: {tmp_path / 'plain' / 'logs'}: {tmp_path / 'plain'} is not a directory (so "
        f"{tmp_path / 'plain' / 'logs'} cannot be made): fix the path or the permissions",
        f"<config>: work_dir: {tmp_path / 'plain'}: {tmp_path / 'plain'} is not a directory: fix the path or the "
        "permissions",
        f"<config>: [queues.Q.backend_options] work_dir: {tmp_path / 'plain' / 'q'}: {tmp_path / 'plain'} is not a "
        f"directory (so {tmp_path / 'plain' / 'q'} cannot be made): fix the path or the permissions"]


def test_a_login_nodes_work_dir_is_on_the_login_node_and_not_looked_for_here(tmp_path):
    key = tmp_path / "id"
    key.write_text("key")
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text(f"login1 {HOST_KEY}\n")
    data = _on_this_host(tmp_path)
    data["queues"]["Q"].update(backend="slurm", backend_options={
        "login_nodes": [], "work_dir": str(tmp_path / "proxy.pem" / "w")})
    assert any("[queues.Q.backend_options] work_dir:" in p for p in _host_problems(data, tmp_path))
    data["queues"]["Q"]["backend_options"].update(login_nodes=["login1"], ssh_key=str(key), known_hosts=str(known))
    assert _host_problems(data, tmp_path) == []


def _denied(monkeypatch, *paths: Path, read_only: bool = False):
    """This account may not write `paths` (as root, os.access says yes to everything)."""
    import os
    import types

    access, statvfs = os.access, os.statvfs
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) in paths and mode & os.W_OK else
                        access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: types.SimpleNamespace(f_flag=os.ST_RDONLY if read_only else 0)
                        if Path(p) in paths else statvfs(p))


@pytest.mark.parametrize("read_only,why", [(False, "is not writable by this account"),
                                           (True, "is on a read-only file system")])
def test_a_directory_this_account_cannot_write_says_whether_the_file_system_is_read_only(
        tmp_path, monkeypatch, read_only, why):
    from harvester_cli.config.environment import directory_problem

    _denied(monkeypatch, tmp_path, read_only=read_only)
    assert directory_problem(tmp_path) == f"{tmp_path} {why}"
    assert directory_problem(tmp_path / "a" / "b") == f"{tmp_path} {why} (needed to create {tmp_path / 'a' / 'b'})"
    assert directory_problem(tmp_path / "proxy") is not None


def test_a_directory_that_exists_or_can_be_made_has_no_problem(tmp_path):
    from harvester_cli.config.environment import directory_problem

    (tmp_path / "sub").mkdir()
    assert directory_problem(tmp_path / "sub") is None
    assert directory_problem(tmp_path / "sub" / "new" / "deeper") is None
    (tmp_path / "file").write_text("")
    assert directory_problem(tmp_path / "file") == f"{tmp_path / 'file'} is not a directory"


@pytest.mark.parametrize("read_only,why", [(False, "the file is not writable by this account"),
                                           (True, "the file is on a read-only file system")])
def test_a_state_database_this_account_cannot_write_is_refused_before_a_run(tmp_path, monkeypatch, read_only, why):
    database = tmp_path / "state.db"
    database.write_bytes(b"")
    database.chmod(0o600)
    _denied(monkeypatch, database, read_only=read_only)
    assert _host_problems(_on_this_host(tmp_path), tmp_path) == [
        f"<config>: state: {database}: {why} (SQLite writes its journal beside the database): fix the permissions "
        "or point `state` elsewhere"]


def test_a_state_database_in_a_directory_that_cannot_be_made_is_refused(tmp_path):
    (tmp_path / "plain").write_text("")
    database = tmp_path / "plain" / "state.db"
    assert _host_problems(_on_this_host(tmp_path, state=str(database)), tmp_path) == [
        f"<config>: state: {database}: {tmp_path / 'plain'} is not a directory: fix the permissions or point "
        "`state` elsewhere".replace(": fix", " (SQLite writes its journal beside the database): fix")]


@pytest.mark.parametrize("state", ["postgresql://u@db1/h", "sqlite:///:memory:"])
def test_a_state_database_that_is_no_file_here_is_not_looked_for(tmp_path, monkeypatch, state):
    """Read as a path, either would be a file in the current directory: one this account may not write."""
    data = _on_this_host(tmp_path, state=state)
    monkeypatch.chdir(tmp_path)
    _denied(monkeypatch, Path("."))
    assert _host_problems(data, tmp_path) == []


def test_state_database_files_others_can_read_are_all_named_in_one_chmod(tmp_path):
    database = tmp_path / "state.db"
    for path, mode in ((database, 0o644), (tmp_path / "state.db-wal", 0o600), (tmp_path / "state.db-shm", 0o604),
                       (tmp_path / "state.db-journal", 0o660)):
        path.write_bytes(b"")
        path.chmod(mode)
    assert _host_problems(_on_this_host(tmp_path), tmp_path) == [
        f"<config>: state: {database} (mode 0644), {database}-shm (mode 0604), {database}-journal (mode 0660) "
        "readable by others, and the state database holds job secrets: "
        f"chmod 600 {database} {database}-shm {database}-journal"]


def test_loose_journal_files_are_named_when_the_database_itself_is_gone(tmp_path):
    folder = tmp_path / "state dir"
    folder.mkdir()
    database = folder / "state.db"
    (folder / "state.db-wal").write_bytes(b"")
    (folder / "state.db-wal").chmod(0o644)
    assert _host_problems(_on_this_host(tmp_path, state=str(database)), tmp_path) == [
        f"<config>: state: {database}-wal (mode 0644) readable by others, and the state database holds job secrets: "
        f"chmod 600 {database}-wal"]


def test_credential_lifetimes_are_checked_besides_the_rest(tmp_path):
    data = _on_this_host(tmp_path)
    data["panda"]["ca"] = str(tmp_path / "no-such-ca")
    assert [p.split(": ")[1] for p in _host_problems(data, tmp_path, lifetimes=True)] == ["[panda] ca"]


def test_sqlite_on_a_network_mount_is_found_in_the_mount_table_given(tmp_path):
    from harvester_cli.config.environment import _sqlite_on_network

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n")
    cfg = config.parse(_on_this_host(tmp_path), SOURCE, tmp_path)
    assert [p.split(" is on ")[1][:4] for p in _sqlite_on_network(cfg, "<config>", str(mounts))] == ["nfs4"]


def test_a_state_database_only_its_owner_can_read_is_no_problem(tmp_path):
    database = tmp_path / "state.db"
    database.write_bytes(b"")
    database.chmod(0o700)
    (tmp_path / "state.db-wal").write_bytes(b"")
    (tmp_path / "state.db-wal").chmod(0o600)
    assert _host_problems(_on_this_host(tmp_path), tmp_path) == []


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA98UPMys8ehM4S0UnlWesg3l77sgmot9PK5gAsAXeTt"


def _login_node_queue(tmp_path: Path, nodes: list[str], host_keys: str | None, **options) -> dict:
    key = tmp_path / "id_login"
    key.write_text("key")
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    if host_keys is not None:
        known.write_text(host_keys)
    return {"mode": "pull", "backend": "slurm", "pilot": "true", "backend_options": {
        "login_nodes": nodes, "ssh_key": str(key), "known_hosts": str(known), "work_dir": "/shared/w", **options}}


def test_a_login_node_without_a_key_in_known_hosts_is_named_with_its_port(tmp_path, capfd):
    data = _on_this_host(tmp_path)
    data["queues"] = {"Q": _login_node_queue(tmp_path, ["login1", "login2"], f"login1 {HOST_KEY}\n")}
    data["queues"]["P"] = _login_node_queue(tmp_path, ["login1"], f"login1 {HOST_KEY}\n", ssh_port=2222)
    known = tmp_path / "known_hosts"
    assert _host_problems(data, tmp_path) == [
        f"<config>: [queues.{name}.backend_options] known_hosts: {known} has no key for login node {entry}: add the "
        "key the site publishes (ssh-keyscan only to compare with it: an unchecked key is what strict checking is "
        "there to refuse)" for name, entry in (("Q", "login2"), ("P", "[login1]:2222"))]
    assert capfd.readouterr().out == ""


def test_a_login_node_on_another_port_is_found_by_its_bracketed_entry(tmp_path):
    data = _on_this_host(tmp_path)
    data["queues"] = {"Q": _login_node_queue(tmp_path, ["login1"], f"[login1]:2222 {HOST_KEY}\n", ssh_port=2222)}
    assert _host_problems(data, tmp_path) == []


def test_a_missing_known_hosts_file_is_reported_once_and_the_next_queue_still_checked(tmp_path):
    data = _on_this_host(tmp_path)
    data["queues"] = {"A": _login_node_queue(tmp_path, ["login1"], None),
                      "B": _login_node_queue(tmp_path, ["login1"], None, known_hosts=str(tmp_path / "kh"))}
    (tmp_path / "kh").write_text(f"other {HOST_KEY}\n")
    problems = _host_problems(data, tmp_path)
    assert len(problems) == 2, problems
    assert problems[0] == (f"<config>: [queues.A.backend_options] known_hosts: {tmp_path / 'known_hosts'}: No such "
                           "file or directory; create it or fix the path")
    assert problems[1].startswith(f"<config>: [queues.B.backend_options] known_hosts: {tmp_path / 'kh'} has no key "
                                  "for login node login1:")


def test_a_login_node_whose_lookup_times_out_does_not_stop_the_check_of_the_next(tmp_path, monkeypatch):
    import subprocess

    run = subprocess.run

    def slow_for_login1(command, **kwargs):
        if "login1" in command:
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        return run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", slow_for_login1)
    data = _on_this_host(tmp_path)
    data["queues"] = {"Q": _login_node_queue(tmp_path, ["login1", "login2"], "")}
    problems = _host_problems(data, tmp_path)
    assert len(problems) == 1 and "has no key for login node login2:" in problems[0], problems


def test_without_ssh_the_first_login_node_queue_says_what_to_install(tmp_path, monkeypatch):
    import shutil

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None if name in ("ssh", "ssh-keygen") else
                        which(name, *a, **kw))
    data = _on_this_host(tmp_path)
    assert _host_problems(data, tmp_path) == []
    data["queues"]["S"] = _login_node_queue(tmp_path, ["login1"], "")
    assert _host_problems(data, tmp_path) == [
        "<config>: [queues.S.backend_options] login_nodes: ssh is not installed (Debian: apt install "
        "openssh-client; EL: dnf install openssh-clients)"]


def test_sqlite_on_a_network_file_system_is_refused_with_what_to_use_instead(tmp_path, monkeypatch):
    from harvester_cli.config import environment

    here = environment.mount_of(tmp_path)
    assert here is not None, "this host's /proc/mounts has no mount above tmp_path"
    monkeypatch.setattr(environment, "NETWORK_FILE_SYSTEMS", frozenset({here[1]}))
    database = tmp_path / "state.db"
    expected = [f"<config>: state: {database} is on {here[1]} ({here[0]}): SQLite on a network file system loses its "
                "locks between hosts and corrupts the database; keep SQLite on a local disk of one host, or give "
                "several hosts one PostgreSQL or MariaDB server (state = \"postgresql://...\" or \"mariadb://...\")"]
    assert _host_problems(_on_this_host(tmp_path), tmp_path) == expected
    database.write_bytes(b"")
    database.chmod(0o600)
    assert _host_problems(_on_this_host(tmp_path), tmp_path) == expected
    assert _host_problems(_on_this_host(tmp_path, state="sqlite:///:memory:"), tmp_path) == []


def test_the_mount_holding_a_path_is_the_longest_mount_point_above_it(tmp_path):
    from harvester_cli.config.environment import mount_of

    mounts = tmp_path / "mounts"
    mounts.write_text("\n".join([
        "/dev/sda1 / ext4 rw 0 0",
        "broken line",
        "server:/export /srv/data nfs4 rw 0 0",
        "server:/other /srv/data/sub nfs rw 0 0",
        "server:/spaced /mnt/my\\040disk cifs rw 0 0",
        "tmpfs /srv/data2 tmpfs rw 0 0",
        "server:/x /srv/dataX nfs rw 0 0",
        "server:/three /srv/three nfs",
        "overlay / overlay rw 0 0",
        "",
    ]))
    assert mount_of(Path("/srv/data/x.db"), str(mounts)) == ("/srv/data", "nfs4")
    assert mount_of(Path("/srv/data"), str(mounts)) == ("/srv/data", "nfs4")
    assert mount_of(Path("/srv/data/sub/x.db"), str(mounts)) == ("/srv/data/sub", "nfs")
    assert mount_of(Path("/srv/data2/x.db"), str(mounts)) == ("/srv/data2", "tmpfs")
    assert mount_of(Path("/srv/three/x.db"), str(mounts)) == ("/srv/three", "nfs")
    assert mount_of(Path("/srv/dataX/x.db"), str(mounts)) == ("/srv/dataX", "nfs")
    assert mount_of(Path("/mnt/my disk/x.db"), str(mounts)) == ("/mnt/my disk", "cifs")
    assert mount_of(Path("/home/x.db"), str(mounts)) == ("/", "overlay")
    assert mount_of(Path("/home/x.db"), str(tmp_path / "no-such-file")) is None
    assert mount_of(Path("/")) is not None


# ---------------------------------------------------------------------------------------------
# What each table says of values that make no sense together


def _token(**settings):
    from harvester_cli.config.sections import TokenProfile

    return TokenProfile(**{"name": "t", "endpoint": "https://iam.example.org/token", "client_id": "c",
                           "client_secret_file": Path("/s"), **settings})


def test_a_token_profile_is_told_to_set_file_or_directory_and_not_both():
    assert list(_token().problems()) == [
        ("", "set file (one token, e.g. for PanDA) or directory (a token per CE)")]
    assert list(_token(file=Path("/t"), directory=Path("/d")).problems()) == [
        ("", "set file (one token) or directory (a token per CE), not both")]
    assert list(_token(file=Path("/t"), audience="https://panda.example.org").problems()) == []


def test_a_per_ce_token_profile_asks_each_ces_own_audience():
    assert list(_token(directory=Path("/d"), audience="x").problems()) == [
        ("audience", "a per-CE profile (directory) asks each CE's own audience; remove audience")]
    assert list(_token(directory=Path("/d")).problems()) == []


def test_audience_formats_name_known_flavours_and_use_host_and_port_only():
    formats = {"condor": "{host}", "htcondor-ce": "{host", "arc-ce": "https://{host}:{port}/{path}"}
    assert list(_token(file=Path("/t"), audience_formats=formats).problems()) == [
        ("audience_formats", "'condor' is not a CE flavour (htcondor-ce, arc-ce)"),
        ("audience_formats", "htcondor-ce: bad template (expected '}' before end of string)"),
        ("audience_formats", "arc-ce: use {host} and {port} only, e.g. \"https://{host}:{port}\""),
    ]
    assert list(_token(file=Path("/t"), audience_formats={"arc-ce": "{port}"}).problems()) == [
        ("audience_formats", "arc-ce: use {host} and {port} only, e.g. \"https://{host}:{port}\"")]
    assert list(_token(file=Path("/t"), audience_formats={"arc-ce": "https://{host}",
                                                          "htcondor-ce": "{host}:{port}"}).problems()) == []


def _proxy(**settings):
    from harvester_cli.config.sections import CertificateConfig, ProxyProfile

    return ProxyProfile(**{"name": "p", "file": Path("/p"),
                           "certificates": [CertificateConfig(cert=Path("/c"), key=Path("/k"))], **settings})


@pytest.mark.parametrize("bits", [1024, 2048, 3072, 4096])
def test_a_proxy_takes_the_key_sizes_the_tools_make(bits):
    assert list(_proxy(bits=bits).problems()) == []


@pytest.mark.parametrize("bits", [1025, 3073, 4097, 512])
def test_a_proxy_refuses_other_key_sizes(bits):
    assert list(_proxy(bits=bits).problems()) == [("bits", f"expected 1024, 2048, 3072 or 4096, got {bits}")]


@pytest.mark.parametrize("voms,ok", [("atlas", True), ("atlas:/atlas/Role=production", True),
                                     ("atlas:/atlas:x", True), (":/atlas", False), ("atlas:atlas", False)])
def test_a_voms_attribute_is_a_vo_or_a_vo_and_an_fqan(voms, ok):
    expected = [] if ok else [("voms", f"expected 'vo' or 'vo:/vo/Role=...', got {voms!r}")]
    assert list(_proxy(voms=voms).problems()) == expected


def test_the_builtin_proxy_tool_makes_no_voms_attribute():
    assert list(_proxy(voms="atlas", tool="builtin").problems()) == [
        ("voms", "the builtin tool makes proxies without VOMS; use voms-proxy-init or arcproxy")]
    assert list(_proxy(tool="builtin").problems()) == []


def test_a_proxy_whose_min_lifetime_is_not_below_its_lifetime_would_be_renewed_every_run():
    assert list(_proxy(lifetime=7200, min_lifetime=7199).problems()) == []
    assert list(_proxy(lifetime=7200, min_lifetime=7200).problems()) == [
        ("min_lifetime", "(7200) must be less than lifetime (7200), or every run renews")]


def test_the_metrics_textfile_ends_in_prom_and_panda_takes_metrics_every_300_s_at_most():
    from harvester_cli.config.sections import MetricsConfig

    assert list(MetricsConfig(textfile=Path("/var/lib/node_exporter/harvester.txt")).problems()) == [
        ("textfile", "/var/lib/node_exporter/harvester.txt: node_exporter reads only files ending in .prom; name it "
                     "e.g. harvester.prom")]
    assert list(MetricsConfig(textfile=Path("/var/lib/node_exporter/harvester.prom")).problems()) == []
    assert list(MetricsConfig(panda_interval=299).problems()) == [
        ("panda_interval", "PanDA takes service metrics at most every 300 s, got 299")]
    assert list(MetricsConfig(panda_interval=1).problems()) != []
    for interval in (0, 300, 301):
        assert list(MetricsConfig(panda_interval=interval).problems()) == []


@pytest.mark.parametrize("host,ok", [("harvester1.example.org", True), ("", False), ("  ", False),
                                     ("host:1", False)])
def test_an_instance_host_is_a_host_name(host, ok):
    from harvester_cli.config.sections import InstanceConfig

    expected = [] if ok else [("host", f"{host!r}: a host name, not empty and without ':'")]
    assert list(InstanceConfig(host=host).problems()) == expected
    assert list(InstanceConfig().problems()) == []


def test_a_cap_names_its_queues_once_and_sets_a_limit():
    from harvester_cli.config.sections import CapConfig

    assert list(CapConfig(name="c").problems()) == [
        ("queues", "list the queues that share this cap, e.g. [\"SITE_A\", \"SITE_B\"]"),
        ("", "set max_queued, max_running or max_cores")]
    assert list(CapConfig(name="c", queues=["A", "A"], max_cores=0).problems()) == [
        ("queues", "a queue is listed twice")]
    assert CapConfig(name="c", queues=["A"], max_running=0, max_cores=8).limits() == {"running": 0, "cores": 8}
