"""What only a terminal shows, through rich: the lines of output.Output painted and measured by a rich
Console, the progress bar (rich.progress) and the line rewritten in place (rich.live). Imported only when
output goes to a terminal: pipes and cron never import rich."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.text import Text

# output.Line: a line's (text, style) pieces, and whether it is a fitted table's row (cut at the right edge)
Line = tuple[Sequence[tuple[str, str | None]], bool]


def _encodable(character: str) -> bool:
    try:
        character.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


ELLIPSIS = "…" if _encodable("…") else "~"


def console(stream: TextIO) -> Console:
    """A Console for a terminal (a tty, or a test that says it is one): as wide as COLUMNS or the terminal,
    coloured unless TERM is dumb or NO_COLOR is set. Under NO_COLOR no escape sequence at all, where rich's
    own NO_COLOR would keep bold and dim."""
    return Console(file=stream, force_terminal=True, color_system=None if os.environ.get("NO_COLOR") else "auto",
                   highlight=False, markup=False, emoji=False)


def show(render: Callable[..., Iterable[Line]]) -> None:
    """What Output.render(width, measure, cut) gives for this terminal, on stdout."""
    screen = console(sys.stdout)
    width = screen.width
    lines = [_text(line, width) for line in render(width, cell_len, cut)]
    if lines:
        screen.print(Text("\n").join(lines), soft_wrap=True)


def _text(line: Line, width: int) -> Text:
    pieces, edge = line
    text = Text.assemble(*((piece, style) if style and piece.strip() else piece for piece, style in pieces))
    if edge and text.cell_len > width:   # a row is cut at the right edge, its last piece's style kept
        text.plain = _start(text.plain, width - 1) + ELLIPSIS
    return text


def _start(text: str, room: int) -> str:
    """The longest start of `text` within `room` cells (set_cell_size makes a wide character cut in half a
    space: left out)."""
    start = set_cell_size(text, room) if room > 0 else ""
    while not text.startswith(start):
        start = start[:-1]
    return start


def cut(text: str, room: int, how: str = "end") -> str:
    """`text` within `room` cells: cut at the end, at the last word that fits ("word"), or in the middle (names
    and paths: both ends kept, which rich's overflow does not do)."""
    if cell_len(text) <= room:
        return text
    if room <= 1:
        return ELLIPSIS[:room]
    if how == "middle":
        head = _start(text, room // 2)
        return head + ELLIPSIS + _start(text[::-1], room - 1 - cell_len(head))[::-1]
    start = _start(text, room - 1)
    if how == "word":
        space = start.rfind(" ")
        if space >= room // 2:
            start = start[:space].rstrip(" ,;:(")
    return start + ELLIPSIS


class InPlace:
    """One line rewritten in place on a terminal, cut to its width so that it never wraps."""

    def __init__(self, stream: TextIO):
        from rich.live import Live

        self.live = Live(console=console(stream), auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def show(self, text: str) -> None:
        self.live.update(Text(cut(text, self.live.console.width, "end")), refresh=True)

    def stop(self) -> None:
        """The last text stays on the screen; the cursor moves below it."""
        self.live.stop()


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr, gone when the work is done; yields advance(n, expected=0), safe to call from
    several threads."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    lock = threading.Lock()
    counts = {"done": 0, "total": total or 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(sys.stderr), transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
        task = bar.add_task(description, total=total or None)   # None: a pulsing bar until a total is known

        def advance(n: int, expected: int = 0) -> None:
            with lock:
                counts["total"] += expected
                counts["done"] += n
                bar.update(task, total=max(counts["total"], counts["done"]) or None, completed=counts["done"])

        yield advance
