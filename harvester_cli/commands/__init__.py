"""One module per command; each defines `command`. Shared option helpers live here."""

from __future__ import annotations

import functools
import time

import click

from harvester_cli.errors import EXIT_OK, EXIT_PARTIAL, HarvesterError

pass_globals = click.pass_obj

# A worker id or PandaID: the state database keeps them as 64-bit integers, so a larger number is a usage
# error here rather than the database driver's OverflowError.
ID = click.IntRange(1, 2**63 - 1)

queue_option = click.option("--queue", "queues", multiple=True, metavar="NAME",
                            help="Only this queue (repeatable; adds to the global --queue).")

wide_option = click.option("-w", "--wide", is_flag=True,
                           help="The long form: every column, every value whole (full URLs, times in UTC), however "
                                "wide the terminal.")


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


def one_at_a_time(out, kind: str, rows: list[dict], key: str, asked: tuple, narrowed: bool) -> list[dict]:
    """`workers ID...`, `jobs PANDAID...`: the rows in the order asked for; each id the state database does not
    hold (or the selected queues and states leave out) is an error, one line each."""
    order = list(dict.fromkeys(asked))
    found = {r[key] for r in rows}
    for missing in [i for i in order if i not in found]:
        out.error(f"{kind} {missing}: not in the state database"
                  + (" (or the options given leave it out)" if narrowed else ""))
    return sorted(rows, key=lambda r: order.index(r[key]) if r[key] in order else len(order))


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


class _FirstError:
    """The first error a run logged (out.error included): why it failed, in one line, for `status`."""

    def __init__(self):
        import logging

        self.first: str | None = None
        self.handler = logging.Handler(logging.ERROR)
        self.handler.emit = self._emit
        self.logger = logging.getLogger("harvester_cli")

    def _emit(self, record) -> None:
        if self.first is None:
            self.first = record.getMessage()

    def __enter__(self) -> "_FirstError":
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *_exc) -> None:
        self.logger.removeHandler(self.handler)


def recorded(name: str):
    """Record each run of this command in the state database: running from its start (pid, host) to its end,
    then its end, exit code, items and, when it failed, the first line of why; add what it counted to the
    metric counters, and rewrite [metrics] textfile: `status` shows what runs now and a stale cron, and
    Prometheus the rest. The command sets g.items (and cycle g.step_runs)."""

    def wrap(function):
        @functools.wraps(function)
        def run(g, *args, **kwargs):
            started = time.time()
            code = EXIT_PARTIAL
            failure = None
            # A dry run or a check is not the cron's: it is not recorded.
            recording = not (kwargs.get("dry_run") or kwargs.get("check_only"))
            run_id = None
            with _FirstError() as errors:
                try:
                    if recording:
                        from harvester_cli.steps import monitor

                        g.config()   # a run that cannot read its configuration has no record
                        run_id = monitor.command_started(g.instance(), name, started)
                    code = function(g, *args, **kwargs)
                    return code
                except (HarvesterError, click.exceptions.Exit, click.ClickException) as exc:
                    code = exc.exit_code
                    failure = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
                    raise
                except BaseException as exc:   # a crash, or Ctrl-C
                    failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    raise
                finally:
                    if g._config is not None and recording:
                        from harvester_cli.steps import monitor

                        ended = time.time()
                        code = code if isinstance(code, int) else EXIT_PARTIAL
                        runs = [monitor.Run(name, started, ended, code, g.items, failure or errors.first)]
                        runs += [monitor.Run(*step) for step in g.step_runs]
                        monitor.after_command(g.instance(), runs, run_id)

        return run

    return wrap
