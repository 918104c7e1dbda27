import click

from harvester_cli.commands import pass_globals


@click.group("config", epilog="Example: harvester-cli --config /etc/harvester-cli/config.toml config check")
def command():
    """Check the configuration, or print an example."""


@command.command("check", epilog="Example: harvester-cli --config /etc/harvester-cli/config.toml config check")
@pass_globals
def check(g):
    """Validate the configuration file and print it resolved (defaults filled in, paths absolute).

    Beyond what every command checks, this looks at the host: files the configuration names must exist,
    files holding secrets must not be readable by others, a login node key's certificate must be valid
    now, and PanDA needs credentials and a queue.
    Every problem is printed, one line each; exit 2 if there is any.
    """
    from harvester_cli.config import as_dict, display_url, environment_problems, state_url_from
    from harvester_cli.config.state_url import servers
    from harvester_cli.errors import ConfigError

    config = g.config()
    problems = environment_problems(config, lifetimes=True)
    if problems:
        raise ConfigError("\n".join(problems))
    data = as_dict(config)
    # What every other command would use, where the file leaves it to a default.
    url = state_url_from(g.state) if g.state else config.state_url
    data["state"] = display_url(url)
    if servers(url):   # the database servers, in the order libpq tries them
        data["state_servers"] = ", ".join(servers(url))
    data["instance"]["host"] = config.host
    out = g.output()
    settings = []
    for key, value in data.items():   # sections ([panda], [sweep], [smtp], [proxies.X] ...) as dotted keys
        if key == "queues":
            continue
        settings += _flatten(key, value)
    out.table(f"configuration {config.path}: ok", ["setting", "value"], settings)
    for name, queue in data["queues"].items():
        out.table(f"queue {name}", ["setting", "value"], list(queue.items()))
    out.emit(data)
    return 0


def _flatten(prefix: str, value) -> list[tuple[str, object]]:
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(f"{prefix}.{k}", v)]
    return [(prefix, value)]


@command.command("keys", epilog="""Examples:

  harvester-cli config keys                     # every key: type, default, range and meaning

  harvester-cli config keys panda               # the keys of [panda]

  harvester-cli config keys queues.max_workers  # one key (max_workers alone finds it too)

  harvester-cli config keys htcondor            # the htcondor backend's backend_options

  harvester-cli config keys --markdown > docs/configuration.md""")
@click.argument("names", nargs=-1, metavar="[TABLE|KEY]...")
@click.option("--markdown", is_flag=True, help="Print the whole reference as Markdown tables.")
@pass_globals
def keys(g, names, markdown):
    """List configuration keys, one block each: its dotted name, type, default, allowed values and meaning
    (from the schema). TABLE or KEY narrows the list: a table (panda, queues, queue_defaults, sweep, a
    backend's name for its backend_options), a dotted key (queues.max_workers) or a key's name alone.
    """
    from dataclasses import asdict

    from harvester_cli.config import reference

    if markdown:
        if names:
            raise click.UsageError("--markdown prints the whole reference: give no TABLE or KEY with it")
        click.echo(reference.markdown(), nl=False)
        return 0
    try:
        rows = reference.matching(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TABLE|KEY") from None
    out = g.output()
    for k in rows:
        out.block(f"{k.path}  {k.type}, default {k.default}", [("", k.meaning), ("", f"in {k.table}")])
    out.emit({"keys": [asdict(k) for k in rows]})
    return 0


@command.command("example", epilog="Example: harvester-cli config example > ~/.config/harvester-cli/config.toml")
@pass_globals
def example(g):
    """Print an example configuration file (TOML; with --json, the same settings as JSON)."""
    from harvester_cli.config import EXAMPLE

    if g.json:
        import json
        import tomllib

        click.echo(json.dumps(tomllib.loads(EXAMPLE), indent=2))
    else:
        click.echo(EXAMPLE, nl=False)
    return 0


# Neither reads a configuration or a state database, nor keeps a command log.
keys.without_global_options = example.without_global_options = ("config", "state", "log_memory")
