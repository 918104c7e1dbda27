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


IN_LIST = "keys"   # the expanding bind parameter of the statements query_in and execute_in take
IN_CHUNK = 500     # keys per statement: within every database's limit of parameters


def query_in(conn: Connection, statement: ClauseElement, names: Sequence[str], values: tuple,
             keys: Sequence) -> list[tuple]:
    """Rows of `statement` (built once: it is compiled once per database, by identity) whose IN list is
    `bindparam(IN_LIST, expanding=True)`, for these keys, as plain tuples. The IN list is written into the
    compiled text here, once per length (PostgreSQL: one array parameter): SQLAlchemy renders it afresh, a
    parameter name per key, on every execution (a fifth of a propagate's own time)."""
    compiled = _compiled_of(conn, statement, names, expanding=True)
    out: list[tuple] = []
    cursor = conn.connection.cursor()
    try:
        for chunk in _chunks(keys):
            cursor.execute(*compiled.with_keys(values, chunk))
            out += cursor.fetchall()
    finally:
        cursor.close()
    return out


def execute_in(conn: Connection, statement: ClauseElement, names: Sequence[str], values: tuple,
               keys: Sequence) -> int:
    """Run `statement` (as query_in takes it) for these keys; returns the rows it matched."""
    compiled = _compiled_of(conn, statement, names, expanding=True)
    return sum(conn.exec_driver_sql(*compiled.with_keys(values, chunk)).rowcount for chunk in _chunks(keys))


def _chunks(keys: Sequence) -> list[Sequence]:
    keys = list(keys)
    return [keys[i:i + IN_CHUNK] for i in range(0, len(keys), IN_CHUNK)]


def _compiled_of(conn: Connection, statement: ClauseElement, names: Sequence[str], *, expanding: bool) -> _Compiled:
    key = (id(statement), conn.dialect.name)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = _compiled[key] = _Compiled(statement, conn.dialect, [*names, IN_LIST] if expanding else names)
        _statements.append(statement)
    return compiled


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
        # how the driver marks a parameter (an IN list written by with_keys)
        self.paramstyle = dialect.paramstyle
        self.mark = {"qmark": "?", "format": "%s", "pyformat": "%%(%s)s", "named": ":%s"}.get(self.paramstyle, "")
        self._texts: dict[int, str] = {}
        # PostgreSQL takes the keys as one array parameter: one text whatever the count, which psycopg parses
        # once and the server prepares once (a list of a hundred parameters it parsed afresh on every call)
        token = f" IN (__[POSTCOMPILE_{IN_LIST}])"
        self.array_text = (self.text.replace(token, f" = ANY ({self.mark % IN_LIST})")
                           if dialect.name == "postgresql" and not self.positional and self.text.count(token) == 1
                           else None)

    def with_keys(self, values: tuple, keys: Sequence) -> tuple[str, tuple | dict]:
        """The text and parameters of the statement with its IN list of these keys (one text per length)."""
        if self.array_text is not None:
            return self.array_text, self.parameters([(*values, list(keys))])[0]
        count = len(keys)
        text = self._texts.get(count)
        if text is None:
            if not self.mark:
                raise ValueError(f"bulk IN lists do not know the parameter style {self.paramstyle!r}")
            if self.positional:
                marks = ", ".join([self.mark] * count)
            else:
                marks = ", ".join(self.mark % f"{IN_LIST}_{i}" for i in range(count))
            text = self._texts[count] = self.text.replace(f"__[POSTCOMPILE_{IN_LIST}]", marks)
        row = self.parameters([(*values, None)])[0]
        if self.positional:
            at = self.bind_names.index(IN_LIST)
            return text, (*row[:at], *keys, *row[at + 1:])
        del row[IN_LIST]
        row.update({f"{IN_LIST}_{i}": k for i, k in enumerate(keys)})
        return text, row

    def parameters(self, rows: Sequence[tuple]) -> list:
        if self.rows_as_they_are:
            return list(rows)
        sources = self.sources
        if self.positional:
            return [tuple(c if i is None else row[i] for i, c in sources) for row in rows]
        names = self.bind_names
        return [{n: (c if i is None else row[i]) for n, (i, c) in zip(names, sources)} for row in rows]
