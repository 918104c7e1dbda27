"""What a command prints: tables and blocks that read on an operator's terminal, aligned plain text when
piped or under cron, the same data as one JSON object with --json.

On a terminal (stdout is a tty) a table reads like condor_q or squeue: no borders, a header and one line
per row, as wide as the terminal and never wider. Columns too wide for it are cut (at a word for prose, in
the middle for names, never for ids and states), the least important columns are left out first (a note
under the table names them), and a row is cut at the right edge rather than wrapped. States are coloured
the way systemctl colours units (failed red, running green); NO_COLOR (https://no-color.org) or TERM=dumb
turn colour off. Piped or under cron every value is printed whole, with no colour and nothing but spaces
between columns. A command's long form (`--wide`) prints every column whole on a terminal too.

A block is one item with every field (`workers ID`, `jobs PANDAID`, `config keys NAME`): a title line,
then one `label  value` line per field; prose is wrapped at words on a terminal, URLs and paths never.

Errors (what made a run partial) go to stderr and the command's own log whatever the output mode, -q
included: cron mails stderr, and an operator reading the log sees why a run exited 1.

What a terminal shows goes through rich (output/terminal.py: colour, cell widths, the terminal's width,
the progress bar, the line rewritten in place); rich is imported only then. Piped or under cron nothing
here imports a library beyond Python's own: cron starts these commands many times a minute."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

GAP = 2   # spaces between columns

# Worker and job states as systemctl colours its units: what failed red, what runs green, what was stopped yellow.
_STATE_STYLES = {"failed": "red", "missed": "red", "cancelled": "yellow", "held": "yellow", "running": "green",
                 "STUCK": "red bold", "gone": "yellow"}


def state_style(text: str) -> str | None:
    """The colour of a worker or job state (or a native state such as held)."""
    return _STATE_STYLES.get(text.split(" ", 1)[0].split("/", 1)[0])


def exit_style(text: str) -> str | None:
    """An exit code: red unless 0."""
    return None if text in ("0", "-", "") else "red"


@dataclass(frozen=True)
class Column:
    """A table column and how it gives way on a narrow terminal.

    cut: how a cell too wide for the column is shortened: "end" (cut, with "…"), "word" (prose: at the last
    word that fits), "middle" (names and paths: both ends kept), "never" (ids, states, numbers).
    min: the narrowest the column may get (0: its header's width); max: the widest it gets on a terminal (0: as
    wide as its widest cell; a batch id of 40 hex digits says enough in 16). drop: 0, always shown; 1, 2, ...: left out
    on a narrow terminal, the highest number first. fill: takes the room left (diag, meaning); it gives
    way before the others. style: a cell's colour from its text (a rich style: "red", "red bold"; a terminal's
    only)."""

    name: str
    align: str = "<"
    cut: str = "word"
    min: int = 0
    max: int = 0
    drop: int = 0
    fill: bool = False
    style: Callable[[str], str | None] | None = None


def number(name: str, **kw) -> Column:
    return Column(name, align=">", cut="never", **kw)


def state(name: str, **kw) -> Column:
    return Column(name, cut="never", style=state_style, **kw)


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[Sequence[Any]]
    fit: bool = True   # on a terminal, fit its width (False: the long form, every value whole)


@dataclass
class Block:
    """One item with every field; a value may be a list (one line each)."""

    title: str
    fields: list[tuple[str, Any]]
    style: str | None = None   # of the title


@dataclass
class Output:
    json_mode: bool = False
    quiet: bool = False
    parts: list[Table | Block | str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # What the command did to the state database (connections, statements, conflicts retried), for --json.
    database: Callable[[], dict | None] | None = None
    # What brings back the columns a narrow terminal leaves out (the command's --wide), for the note.
    wide_hint: str = "a wider terminal"

    @property
    def terminal(self) -> bool:
        return sys.stdout.isatty() and not self.json_mode

    @property
    def tables(self) -> list[Table]:
        return [p for p in self.parts if isinstance(p, Table)]

    @property
    def lines(self) -> list[str]:
        return [p for p in self.parts if isinstance(p, str)]

    def table(self, title: str, columns: Sequence[str | Column], rows: list[Sequence[Any]], *,
              fit: bool = True) -> None:
        self.parts.append(Table(title, [c if isinstance(c, Column) else Column(c) for c in columns], rows, fit))

    def block(self, title: str, fields: list[tuple[str, Any]], style: str | None = None) -> None:
        self.parts.append(Block(title, fields, style))

    def line(self, text: str) -> None:
        self.parts.append(text)

    def error(self, text: str) -> None:
        """One thing that went wrong: on stderr and in the command log now, and in the JSON as `errors`."""
        import logging

        self.errors.append(text)
        logging.getLogger("harvester_cli").error("%s", text)

    def emit(self, data: Any) -> None:
        """Print everything collected (or `data` as JSON). A reader that stops reading (`| head`) is not a
        failure: the rest of the output is dropped and the command ends with the exit code of its work."""
        try:
            self._emit(data)
            sys.stdout.flush()
        except BrokenPipeError:
            stdout_closed()

    def _emit(self, data: Any) -> None:
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
            from harvester_cli.output import terminal

            terminal.show(self.render)
        else:
            sys.stdout.write("".join("".join(text for text, _ in line.pieces) + "\n" for line in self.render()))

    def render(self, width: int | None = None, measure: Callable[[str], int] | None = None,
               cut: Callable[[str, int, str], str] | None = None) -> Iterator[Line]:
        """Every part as lines within `width` cells (None: plain text, every value whole), cells measured by
        `measure` and cut by `cut` (a terminal's: rich's; plain text: Python's own count, nothing cut)."""
        measure = measure or cells
        after_line = False
        for part in self.parts:
            if after_line and not isinstance(part, str):
                yield Line()   # a table or a block stands apart from the lines above it
            after_line = isinstance(part, str)
            if isinstance(part, Table):
                yield from _table(part, width if part.fit else None, measure, cut, self.wide_hint)
            elif isinstance(part, Block):
                yield from _block(part, width, measure)
            else:
                yield from (Line(((line, None),)) for line in wrap(clean(part), width, measure=measure))

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """A progress bar on a terminal (stderr; rich.progress), nothing otherwise; yields advance(n,
        expected=0): n items done, and `expected` more items known to come (the total grows as the work is
        planned). Safe to call from several threads (a backend's submissions in parallel)."""
        if not live_terminal(sys.stderr) or self.json_mode or self.quiet:
            yield lambda n, expected=0: None
            return
        from harvester_cli.output import terminal

        with terminal.progress(description, total) as advance:
            yield advance


class Line(NamedTuple):
    """One printed line: its pieces of text, each with a style (None: plain)."""

    pieces: tuple[tuple[str, str | None], ...] = ()
    edge: bool = False   # a fitted table's row: cut at the terminal's right edge (prose wraps, a URL stays whole)


def live_terminal(stream) -> bool:
    """`stream` is a terminal that can rewrite a line in place (rich's live display draws nothing on a dumb
    one)."""
    return stream.isatty() and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def stdout_closed() -> None:
    """stdout's reader went away (`harvester-cli workers | head -1`): point stdout at /dev/null, so neither
    the rest of the output nor Python's last flush at exit fails, and say so in the command log only."""
    import logging

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):   # no file descriptor behind sys.stdout (tests): nothing to redirect
        pass
    logging.getLogger("harvester_cli").info("stdout was closed by its reader (a pipe such as `| head`): the rest "
                                           "of the output was dropped")


class LiveLine:
    """One line on a terminal rewritten in place (rich.live), cut to the terminal's width so that it never
    wraps; elsewhere (a file, cron, a dumb terminal) each new text is one line."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.in_place = live_terminal(self.stream)
        self._live = None
        self._shown = ""

    def show(self, text: str) -> None:
        if text == self._shown:
            return
        self._shown = text
        if self.in_place:
            from harvester_cli.output import terminal

            self._live = self._live or terminal.InPlace(self.stream)
            self._live.show(text)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def keep(self) -> None:
        """Leave the last text on the screen and move below it."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._shown = ""


# -- text ------------------------------------------------------------------------------------------

def text_of(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return clean(str(value))


_CONTROL = {c: " " for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}


def clean(text: str) -> str:
    """One line, without control characters: a diag from a CE or a pilot may hold newlines, tabs or escape
    sequences, which must neither break a table nor reach the terminal."""
    return text if text.isprintable() else text.translate(_CONTROL)


def cells(text: str) -> int:
    """The terminal cells a text takes (East Asian wide characters take two, combining marks none): how plain
    text and help are aligned, where rich is not imported (a terminal's output measures with rich.cells)."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, width: int | None, indent: int | None = None, measure: Callable[[str], int] = cells) -> list[str]:
    """A line of prose as lines within `width` (None: as it is), broken at spaces only: a URL or a path
    longer than the width stays whole on a line of its own. Continuations are indented by the line's own
    indentation plus two (or `indent`)."""
    if width is None or measure(text) <= width:
        return [text]
    lead = len(text) - len(text.lstrip(" "))
    hang = lead + 2 if indent is None else indent
    pieces = fold(text[lead:], width - lead, width - hang, measure)
    return [" " * lead + pieces[0]] + [" " * hang + p for p in pieces[1:]]


def fold(text: str, first: int, rest: int | None = None, measure: Callable[[str], int] = cells) -> list[str]:
    """Words of `text` into pieces of at most `first` cells (then `rest`); a word longer than that is a
    piece of its own, whole."""
    rest = first if rest is None else rest
    pieces, current, room = [], "", first
    for word in text.split(" "):
        if not word:
            continue
        candidate = f"{current} {word}" if current else word
        if not current or measure(candidate) <= room:
            current = candidate
        else:
            pieces.append(current)
            current, room = word, rest
    return pieces + [current] if current or not pieces else pieces


# -- tables -----------------------------------------------------------------------------------------

# Hand-written: rich's Table shrinks or wraps every column alike; it cannot leave the least important out.
def layout(columns: list[Column], cells_: list[list[str]], width: int | None,
           measure: Callable[[str], int] = cells) -> tuple[list[int], dict[int, int]]:
    """Which columns show (their indices) and how wide each is, within `width` (None: all, whole)."""
    natural = [max([measure(c.name)] + [measure(r[i]) for r in cells_]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    if width is None:
        return shown, dict(enumerate(natural))
    natural = [min(n, max(c.max, measure(c.name))) if c.max else n for n, c in zip(natural, columns)]

    def least(i: int) -> int:
        c = columns[i]
        return natural[i] if c.cut == "never" else min(natural[i], max(measure(c.name), c.min))

    def total(widths: dict[int, int]) -> int:
        return sum(widths.values()) + GAP * (len(widths) - 1)

    def needed(j: int) -> int:   # an optional column stays if it fits whole, the filling column at its narrowest
        return least(j) if columns[j].fill else natural[j]

    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: (-columns[i].drop, -i)):
        if total({j: needed(j) for j in shown}) <= width:
            break
        shown.remove(i)
    widths = {i: natural[i] for i in shown}
    while total(widths) > width:
        give = [i for i in shown if widths[i] > least(i)]
        if not give:
            break
        # the filling column gives way first, then the least important (the first to be left out), then the widest
        i = max(give, key=lambda i: (columns[i].fill, columns[i].drop, widths[i], -i))
        peers = [widths[j] for j in give if j != i and (columns[j].fill, columns[j].drop) == (columns[i].fill,
                                                                                             columns[i].drop)]
        step = widths[i] - max(peers) if peers and widths[i] > max(peers) else 1 if peers else widths[i]
        widths[i] -= min(step, widths[i] - least(i), total(widths) - width)
    return shown, widths


def _table(table: Table, width: int | None, measure: Callable[[str], int], cut: Callable[[str, int, str], str] | None,
           wide_hint: str) -> Iterator[Line]:
    if table.title:
        yield from (Line(((line, "bold"),)) for line in wrap(clean(table.title), width, measure=measure))
    rows = [[text_of(v) for v in row] for row in table.rows]
    shown, widths = layout(table.columns, rows, width, measure)

    def line(values: list[str], styles: list[str | None]) -> Line:
        pieces: list[tuple[str, str | None]] = []
        for i in shown:
            column = table.columns[i]
            text = cut(values[i], widths[i], column.cut if column.cut != "never" else "end") if width else values[i]
            pad = (" " * (widths[i] - measure(text)), None)
            if pieces:
                pieces.append((" " * GAP, None))
            pieces += [(text, styles[i]), pad] if column.align == "<" else [pad, (text, styles[i])]
        return Line(_rstrip(pieces), edge=width is not None)

    yield line([c.name for c in table.columns], ["bold"] * len(table.columns))
    for row in rows:
        yield line(row, [c.style(v) if c.style else None for c, v in zip(table.columns, row)])
    if not rows:
        yield Line((("(none)", None),))
    left_out = [c.name for i, c in enumerate(table.columns) if i not in shown]
    if left_out:
        note = f"({', '.join(left_out)}: not shown at {width} columns; {wide_hint} shows them)"
        yield from (Line(((text, "dim"),)) for text in wrap(note, width, measure=measure))
    yield Line()


def _rstrip(pieces: list[tuple[str, str | None]]) -> tuple[tuple[str, str | None], ...]:
    """The pieces of a line without its trailing spaces."""
    while pieces and not pieces[-1][0].rstrip():
        pieces.pop()
    if pieces:
        pieces[-1] = (pieces[-1][0].rstrip(), pieces[-1][1])
    return tuple(pieces)


def _block(block: Block, width: int | None, measure: Callable[[str], int]) -> Iterator[Line]:
    yield from (Line(((line, block.style or "bold"),)) for line in wrap(clean(block.title), width, measure=measure))
    label_width = max((measure(label) for label, _ in block.fields), default=0)
    indent = 2 + label_width + (GAP if label_width else 0)   # fields without labels: prose under the title
    for label, value in block.fields:
        values = value if isinstance(value, list) else [value]
        for n, item in enumerate(values or [None]):
            head = (f"  {label.ljust(label_width)}" if n == 0 else " " * (2 + label_width)) + " " * (indent - 2 -
                                                                                               label_width)
            text = text_of(item)
            pieces = fold(text, width - indent, measure=measure) if width and measure(text) > width - indent else [text]
            yield Line(((head + pieces[0], None),))
            yield from (Line(((" " * indent + piece, None),)) for piece in pieces[1:])
    yield Line()


# -- short forms for narrow columns ---------------------------------------------------------------------

# Ports a CE's name does not need: HTCondor-CE's, HTTPS (ARC REST), gsiftp
DEFAULT_PORTS = (":9619", ":443", ":2811")


def short_names(names: Sequence[str | None]) -> dict[str, str]:
    """Host-like names (CEs, schedds, hosts) as short as they can be and still tell each other apart:
    the scheme, the path and a default port dropped, then the fewest leading DNS labels that keep them
    distinct (ce503.cern.ch:9619 and ce504.cern.ch:9619 read ce503 and ce504). IP addresses stay whole."""
    def bare(name: str) -> tuple[list[str], str]:
        rest = name.split("://", 1)[-1].split("/", 1)[0]
        for port in DEFAULT_PORTS:
            if rest.endswith(port):
                rest = rest[: -len(port)]
        host, colon, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
        host = host if colon else rest
        suffix = f":{port}" if colon else ""
        if host.replace(".", "").isdigit() or ":" in host:
            return [host], suffix
        return host.split("."), suffix

    unique = sorted({n for n in names if n})
    split = {n: bare(n) for n in unique}
    out = {}
    for name, (labels, suffix) in split.items():
        for k in range(1, len(labels) + 1):
            short = ".".join(labels[:k]) + suffix
            clash = [o for o, (ls, sx) in split.items() if o != name and ".".join(ls[:k]) + sx == short]
            if not clash:
                break
        out[name] = short if not clash else name
    return out
