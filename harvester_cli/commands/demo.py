import click

from harvester_cli.commands import exit_code, pass_globals


@click.command("demo", epilog="Example: harvester-cli demo --json | jq '.jobs'")
@click.option("--jobs", "jobs_per_queue", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Activated jobs per queue.")
@click.option("--keep", type=click.Path(path_type=__import__("pathlib").Path),
              help="Keep state, logs, certificates and config.toml in this directory (a new or empty one).")
@pass_globals
def command(g, jobs_per_queue, keep):
    """Start the PanDA simulator on loopback with jobs in a pull and a push queue, run cycles with the
    local backend and a temporary SQLite state until every job and worker has finished."""
    from harvester_cli.steps.demo import run_demo

    out = g.output()

    def show(cycle, steps):
        if not g.json and g.verbosity >= 0:
            click.echo(f"cycle {cycle}: " + "; ".join(f"{s.step}: {s.summary}" for s in steps), err=True)

    result = run_demo(jobs_per_queue, keep=keep, on_cycle=show)
    out.table("jobs in the PanDA simulator", ["PandaID", "queue", "status"],
              [(j["panda_id"], j["queue"], j["status"]) for j in result.jobs])
    out.table("workers", ["worker", "queue", "status", "backend", "PandaIDs"],
              [(w["worker_id"], w["queue"], w["status"], w["backend"], ",".join(map(str, w["panda_ids"])) or None)
               for w in result.workers])
    out.line(f"demo {'finished' if result.ok else 'did NOT finish'}: {result.cycles} cycles in {result.seconds:.1f} s"
             + (f"; files kept in {result.directory}, its configuration in {result.directory}/config.toml"
                if result.directory else ""))
    out.emit({"ok": result.ok, "seconds": round(result.seconds, 2), "cycles": result.cycles, "jobs": result.jobs,
              "workers": result.workers})
    return exit_code(not result.ok)


command.without_global_options = ("config", "state", "log_memory")   # its own configuration and state, temporary
