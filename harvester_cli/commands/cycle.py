import click

from harvester_cli.commands import exit_code, pass_globals, queue_option


@click.command("cycle", epilog="Example (crontab): * * * * * harvester-cli --config /etc/harvester-cli/config.toml -q cycle")
@queue_option
@pass_globals
def command(g, queues):
    """Run fetch-jobs, submit, poll, propagate and sweep in order; a failing step does not stop the rest."""
    from dataclasses import asdict

    from harvester_cli.steps.cycle import run_cycle

    results = run_cycle(g.instance(), g.selected(queues))
    out = g.output()
    out.table("cycle", ["step", "summary", "partial", "why"],
              [(r.step, r.summary, "yes" if r.partial else "", "; ".join(r.problems)) for r in results])
    for r in results:
        for problem in r.problems:
            out.error(f"{r.step}: {problem}")
    out.emit({"steps": [asdict(r) for r in results]})
    return exit_code(any(r.partial for r in results))
