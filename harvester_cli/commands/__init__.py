"""One module per command; each defines `command`. Shared option helpers live here."""

from __future__ import annotations

import functools
import time

import click

from harvester_cli.errors import EXIT_OK, EXIT_PARTIAL, HarvesterError

pass_globals = click.pass_obj

queue_option = click.option("--queue", "queues", multiple=True, metavar="NAME",
                            help="Only this queue (repeatable; adds to the global --queue).")


def report(out, problems) -> None:
    """Each reason a run was partial, one line each; the calls skipped because PanDA did not answer earlier
    in the run (the client said so once, with why) as one line."""
    from harvester_cli.errors import PandaUnreachable

    skipped = 0
    for problem in problems:
        if PandaUnreachable.SKIPPED in problem:
            skipped += 1
        else:
            out.error(problem)
    if skipped:
        out.error(f"{skipped} more PanDA call(s) {PandaUnreachable.SKIPPED}; the next run tries again")


def exit_code(partial: bool) -> int:
    return EXIT_PARTIAL if partial else EXIT_OK


class Duration(click.ParamType):
    """A length of time as an operator writes it: 90s, 15m, 6h, 2d (a bare number is seconds)."""

    name = "duration"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        number, unit = (text[:-1], text[-1]) if text[-1:] in self.UNITS else (text, "s")
        try:
            seconds = float(number) * self.UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a duration: write e.g. 90s, 15m, 6h or 2d", param, ctx)
        if not 0 <= seconds <= 10 * 365 * 86400:
            self.fail(f"{value!r} is out of range (0 to 10 years)", param, ctx)
        return int(seconds)


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
