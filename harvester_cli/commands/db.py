import click

from harvester_cli.commands import pass_globals
from harvester_cli.errors import HarvesterError, StateError


@click.group("db", epilog="Example: harvester-cli --state /var/lib/harvester-cli/state.db db upgrade")
def command():
    """State database maintenance: schema migrations (upgrade, current, history)."""


def _store(g, *, long_waits: bool = False):
    """The state database, its server's answer first bounded by [instance] db_timeout (a server that is down
    or silent is one line and exit 1, as for the other commands). With `long_waits` (an upgrade: a migration
    and the upgrade lock may take long) no bound holds once the server has answered."""
    from harvester_cli.config import ConfigError, state_url_from, state_url_problem
    from harvester_cli.config.sections import InstanceConfig
    from harvester_cli.state.store import Store

    if g.state and (problem := state_url_problem(g.state)):
        raise ConfigError(f"--state: {problem}")
    config = None
    if g.state:
        try:
            config = g.config()   # for the command log in its log_dir; --state alone needs no configuration
        except HarvesterError:
            pass
    else:
        config = g.config()
    url = state_url_from(g.state) if g.state else config.state_url
    timeout = (config.instance if config else InstanceConfig()).db_timeout
    store = Store(url, check_schema=False, timeout=timeout)
    if not long_waits or store.is_sqlite:
        return store
    try:
        store.revision()   # the server answers (or the command ends here, within db_timeout)
    finally:
        store.close()
    return Store(url, check_schema=False, timeout=None)


@command.command("upgrade", epilog="""Examples:

  harvester-cli --state postgresql://harvester@db/harvester db upgrade

  harvester-cli db upgrade --sql > upgrade.sql   # for a DBA who applies schema changes by hand""")
@click.option("--sql", "as_sql", is_flag=True, help="Print the DDL the upgrade would run; change nothing.")
@pass_globals
def upgrade(g, as_sql):
    """Create or migrate the state database schema to this version of harvester-cli.

    Safe to repeat, and safe on several hosts at once: one migrates, the others wait and find nothing to do.
    """
    from harvester_cli.state import upgrade as migrations

    store = _store(g, long_waits=not as_sql)
    out = g.output()
    if as_sql:
        script = migrations.upgrade_sql(store)
        if g.json:
            out.emit({"url": store.display_url, "sql": script})
        else:
            text = script or f"-- {store.display_url} is at the newest schema revision: nothing to do"
            click.echo(text.rstrip("\n") + "\n", nl=False)   # ends its last line, whatever Alembic wrote
        return 0
    before, after = migrations.upgrade(store)
    out.line(f"{store.display_url}: schema revision {before or '(new database)'} -> {after}" if before != after
             else f"{store.display_url}: schema revision {after}, nothing to do")
    out.emit({"url": store.display_url, "from": before, "to": after})
    return 0


@command.command("current", epilog="Example: harvester-cli db current --json")
@pass_globals
def current(g):
    """Say which schema revision the state database is at, and whether it needs `db upgrade`.

    Exit codes: 0 up to date, 1 needs `db upgrade` (or is empty), 2 newer than this harvester-cli, not its
    database, or a SQLite file that does not exist (a typo in `state`?).
    """
    from harvester_cli.state.schema import HEAD, REVISIONS
    from harvester_cli.state.store import schema_problem

    store = _store(g)
    if store.sqlite_path is not None and not store.sqlite_path.exists():
        raise StateError(f"state database {store.display_url} does not exist: create it with `harvester-cli db "
                         "upgrade` (or fix `state` / --state if it should exist)")
    revision = store.revision()
    problem = "is empty: run `harvester-cli db upgrade`" if revision is None else schema_problem(revision)
    out = g.output()
    out.line(f"{store.display_url}: revision {revision or '-'}" + (f" ({problem})" if problem else " (up to date)"))
    out.emit({"url": store.display_url, "revision": revision, "head": HEAD, "problem": problem})
    if not problem:
        return 0
    return 1 if revision is None or revision in REVISIONS else 2


@command.command("history", epilog="Example: harvester-cli db history")
@pass_globals
def history(g):
    """List the schema migrations this harvester-cli ships, oldest first."""
    from dataclasses import asdict

    from harvester_cli.state import upgrade as migrations

    revisions = migrations.history()
    out = g.output()
    out.table("schema migrations", ["revision", "after", "what it does"],
              [(r.revision, r.down_revision, r.description) for r in revisions])
    out.emit({"revisions": [asdict(r) for r in revisions]})
    return 0


history.without_global_options = ("config", "state", "log_memory")   # the scripts this code ships, no database
