"""One module per command; each defines `command`. Shared option helpers live here."""

from __future__ import annotations

import click

from harvester_cli.errors import EXIT_OK, EXIT_PARTIAL

pass_globals = click.pass_obj

queue_option = click.option("--queue", "queues", multiple=True, metavar="NAME",
                            help="Only this queue (repeatable; adds to the global --queue).")


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
