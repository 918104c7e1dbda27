import click

from harvester_cli.commands import exit_code, pass_globals, queue_option, recorded, report


@click.command("cycle", epilog="""Example (crontab, with HARVESTER_CLI_CONFIG=... above it):

  * * * * * harvester-cli-cron cycle""")
@queue_option
@pass_globals
@recorded("cycle")
def command(g, queues):
    """Run fetch-jobs, submit, poll, propagate and sweep in order; a failing step does not stop the rest."""
    from dataclasses import asdict

    from harvester_cli.steps.cycle import run_cycle

    results = run_cycle(g.instance(), g.selected(queues))
    g.items = sum(r.items for r in results)
    g.step_runs = [(r.step, r.started, r.ended, r.exit_code, r.items, r.problems[0] if r.problems else None)
                   for r in results]
    out = g.output()
    out.table("cycle", ["step", "summary", "partial", "why"],
              [(r.step, r.summary, "yes" if r.partial else "", "; ".join(r.problems)) for r in results])
    report(out, [f"{r.step}: {problem}" for r in results for problem in r.problems])
    out.emit({"steps": [asdict(r) for r in results]})
    return max([r.exit_code for r in results] + [exit_code(any(r.partial for r in results))])
