"""What a command prints: rich tables on a terminal, aligned plain text when piped or under cron,
the same data as one JSON object with --json. rich is imported only when a terminal will show it.

Errors (what made a run partial) go to stderr and the command's own log whatever the output mode, -q
included: cron mails stderr, and an operator reading the log sees why a run exited 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]]
    no_wrap: tuple[str, ...] = ()   # URL columns: one line, as terminal hyperlinks


@dataclass
class Output:
    json_mode: bool = False
    quiet: bool = False
    tables: list[Table] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # What the command did to the state database (connections, statements, conflicts retried), for --json.
    database: Callable[[], dict | None] | None = None

    @property
    def terminal(self) -> bool:
        return sys.stdout.isatty() and not self.json_mode

    def table(self, title: str, columns: Sequence[str], rows: list[Sequence[Any]], *,
              no_wrap: Sequence[str] = ()) -> None:
        self.tables.append(Table(title, columns, rows, tuple(no_wrap)))

    def line(self, text: str) -> None:
        self.lines.append(text)

    def error(self, text: str) -> None:
        """One thing that went wrong: on stderr and in the command log now, and in the JSON as `errors`."""
        import logging

        self.errors.append(text)
        logging.getLogger("harvester_cli").error("%s", text)

    def emit(self, data: Any) -> None:
        """Print everything collected (or `data` as JSON)."""
        if self.json_mode:
            if isinstance(data, dict) and self.errors:
                data = {**data, "errors": self.errors}
            stats = self.database() if self.database is not None and isinstance(data, dict) else None
            if stats:
                data = {**data, "database": stats}
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
            return
        if self.quiet:
            return
        if self.terminal:
            self._rich()
        else:
            self._plain()

    def _plain(self) -> None:
        out = sys.stdout
        for table in self.tables:
            if table.title:
                out.write(f"{table.title}\n")
            cells = [[_cell(v) for v in row] for row in table.rows]
            widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(table.columns)]
            out.write("  ".join(c.ljust(w) for c, w in zip(table.columns, widths)).rstrip() + "\n")
            for row in cells:
                out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")
            if not table.rows:
                out.write("(none)\n")
            out.write("\n")
        for line in self.lines:
            out.write(line + "\n")

    def _rich(self) -> None:
        from rich.console import Console
        from rich.table import Table as RichTable

        console = Console(force_terminal=True)   # called only when stdout is a terminal
        for table in self.tables:
            rich_table = RichTable(title=table.title or None, title_justify="left")
            for column in table.columns:
                if column in table.no_wrap:
                    rich_table.add_column(column, no_wrap=True)
                else:
                    rich_table.add_column(column, overflow="fold")
            linked = {i for i, c in enumerate(table.columns) if c in table.no_wrap}
            for row in table.rows:
                rich_table.add_row(*[_link(_cell(v)) if i in linked else _cell(v) for i, v in enumerate(row)])
            console.print(rich_table)
        for line in self.lines:
            console.print(line, highlight=False)

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """A progress bar on a terminal (stderr), nothing otherwise; yields advance(n, expected=0): n items
        done, and `expected` more items known to come (the total grows as the work is planned)."""
        if not sys.stderr.isatty() or self.json_mode or self.quiet:
            yield lambda n, expected=0: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)

            def advance(n: int, expected: int = 0) -> None:
                if expected:
                    bar.update(task, total=(bar.tasks[task].total or 0) + expected)
                bar.advance(task, n)

            yield advance


def _link(text: str):
    """A URL as a short terminal hyperlink (its last two path parts; the whole URL is the link target), so a
    table row stays one line and the log is one click away; plain text and --json keep the full URL."""
    from rich.text import Text

    if "://" not in text:
        return text
    return Text("…/" + "/".join(text.rstrip("/").split("/")[-2:]), style=f"link {text}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
