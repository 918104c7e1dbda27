"""One module per command; each defines `command`. Shared option helpers live here."""

from __future__ import annotations

import functools
import time

import click

from harvester_cli.errors import EXIT_OK, EXIT_PARTIAL, HarvesterError

pass_globals = click.pass_obj

queue_option = click.option("--queue", "queues", multiple=True, metavar="NAME",
                            help="Only this queue (repeatable; adds to the global --queue).")


def exit_code(partial: bool) -> int:
    return EXIT_PARTIAL if partial else EXIT_OK


def recorded(name: str):
    """Record each run of this command (start, end, exit code, items) in the state database, add what it
    counted to the metric counters, and rewrite [metrics] textfile: `status` shows a stale cron, and
    Prometheus the rest. The command sets g.items (and cycle g.step_runs)."""

    def wrap(function):
        @functools.wraps(function)
        def run(g, *args, **kwargs):
            started = time.time()
            code = EXIT_PARTIAL
            try:
                code = function(g, *args, **kwargs)
                return code
            except HarvesterError as exc:
                code = exc.exit_code
                raise
            except click.exceptions.Exit as exc:
                code = exc.exit_code
                raise
            except click.ClickException as exc:
                code = exc.exit_code
                raise
            finally:
                # A run that could not read its configuration has no record; a dry run or a check is not the cron's.
                if g._config is not None and not (kwargs.get("dry_run") or kwargs.get("check_only")):
                    from harvester_cli.steps import monitor

                    ended = time.time()
                    runs = [monitor.Run(name, started, ended, code if isinstance(code, int) else EXIT_PARTIAL, g.items)]
                    runs += [monitor.Run(*step) for step in g.step_runs]
                    monitor.after_command(g.instance(), runs)

        return run

    return wrap
