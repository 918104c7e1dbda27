import click

from harvester_cli.commands import pass_globals


@click.group("db", epilog="Example: harvester-cli --state /var/lib/harvester-cli/state.db db upgrade")
def command():
    """State database maintenance."""


@command.command("upgrade", epilog="Example: harvester-cli --state postgresql://harvester@db/harvester db upgrade")
@pass_globals
def upgrade(g):
    """Create or migrate the state database schema to this version of harvester-cli (safe to repeat)."""
    from harvester_cli.config import state_url_from
    from harvester_cli.store import Store

    url = state_url_from(g.state) if g.state else g.config().state_url
    store = Store(url, check_schema=False)
    before, after = store.upgrade()
    out = g.output()
    out.line(f"{store.display_url}: schema version {before} -> {after}" if before != after
             else f"{store.display_url}: schema version {after}, nothing to do")
    out.emit({"url": store.display_url, "from": before, "to": after})
    return 0
