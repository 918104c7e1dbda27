"""One module per command; each defines `command`. Shared option helpers live here."""

from __future__ import annotations

import click

from harvester_cli.errors import EXIT_OK, EXIT_PARTIAL

pass_globals = click.pass_obj

queue_option = click.option("--queue", "queues", multiple=True, metavar="NAME",
                            help="Only this queue (repeatable; adds to the global --queue).")


def exit_code(partial: bool) -> int:
    return EXIT_PARTIAL if partial else EXIT_OK
