"""Statements run for many rows at once (executemany), compiled once per database and handed to the
driver as plain parameter rows.

SQLAlchemy's executemany builds and type-processes a parameter dictionary per row: profiled, that was
half of a poll that changes 50k workers and most of the outbox's writes. The statements here use only
explicit bind parameters of plain types (numbers, text, booleans), which every driver takes as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

_compiled: dict[tuple[int, str], _Compiled] = {}
_statements: list[ClauseElement] = []   # keeps every compiled statement alive, so its id() stays its own


def execute_many(conn: Connection, statement: ClauseElement, names: Sequence[str], rows: Sequence[tuple]) -> int:
    """Run `statement` (a module-level constant: it is compiled once) once per row; each row holds the values
    of the bind parameters `names`, in that order. Other bind parameters keep the values the statement gave.
    Returns the rows the statements matched, summed (every driver here reports the sum for executemany)."""
    if not rows:
        return 0
    key = (id(statement), conn.dialect.name)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = _compiled[key] = _Compiled(statement, conn.dialect, names)
        _statements.append(statement)
    return conn.exec_driver_sql(compiled.text, compiled.parameters(rows)).rowcount


def query(conn: Connection, statement: ClauseElement, names: Sequence[str], values: tuple) -> list[tuple]:
    """Rows of `statement` (a module-level constant, compiled once) as the driver gives them, plain tuples:
    for reads of hundreds of thousands of rows, where SQLAlchemy's Row objects were most of the cost."""
    key = (id(statement), conn.dialect.name)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = _compiled[key] = _Compiled(statement, conn.dialect, names)
        _statements.append(statement)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.text, compiled.parameters([values])[0])
        return cursor.fetchall()
    finally:
        cursor.close()


class _Compiled:
    def __init__(self, statement: ClauseElement, dialect, names: Sequence[str]):
        sql = statement.compile(dialect=dialect)
        constants = {name: bind.value for name, bind in sql.binds.items()}
        self.text = sql.string
        self.positional = bool(sql.positional)
        self.bind_names = list(sql.positiontup if self.positional else sql.binds)
        index = {name: i for i, name in enumerate(names)}
        unknown = set(names) - set(self.bind_names)
        if unknown:
            raise ValueError(f"bulk statement has no bind parameters {sorted(unknown)}")
        # per parameter of the text: (index in a row, or None for a constant of the statement, the constant)
        self.sources = [(index.get(n), constants.get(n)) for n in self.bind_names]
        self.rows_as_they_are = self.positional and [i for i, _ in self.sources] == list(range(len(names)))

    def parameters(self, rows: Sequence[tuple]) -> list:
        if self.rows_as_they_are:
            return list(rows)
        sources = self.sources
        if self.positional:
            return [tuple(c if i is None else row[i] for i, c in sources) for row in rows]
        names = self.bind_names
        return [{n: (c if i is None else row[i]) for n, (i, c) in zip(names, sources)} for row in rows]
