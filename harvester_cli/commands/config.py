import click

from harvester_cli.commands import pass_globals


@click.group("config", epilog="Example: harvester-cli --config /etc/harvester-cli/config.toml config check")
def command():
    """Check the configuration, or print an example."""


@command.command("check", epilog="Example: harvester-cli --config /etc/harvester-cli/config.toml config check")
@pass_globals
def check(g):
    """Validate the configuration file and print it resolved (defaults filled in, paths absolute)."""
    from harvester_cli.config import as_dict, display_url, state_url_from

    config = g.config()
    data = as_dict(config)
    if g.state:   # what every other command would use
        data["state"] = display_url(state_url_from(g.state))
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


@command.command("example", epilog="Example: harvester-cli config example > ~/.config/harvester-cli/config.toml")
def example():
    """Print an example configuration file."""
    from harvester_cli.config import EXAMPLE

    click.echo(EXAMPLE, nl=False)
    return 0
