"""The configuration schema's machinery: a setting is a dataclass field made by `setting()`, carrying its
meaning, range, choices and URL scheme; `Validator` turns TOML tables into the frozen dataclasses and
collects every problem at once, each one line naming the file, the table, the key and the fix.

Rules every setting gets without asking: the TOML type must match the annotation (an int is accepted
where a float is expected), numbers are finite, not negative and fit the database's integers, strings
that name a choice must be one of the choices (a near miss or a wrong case gets "did you mean").
A section may add cross-field rules with a `problems()` method returning (key, message) pairs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvester_cli.errors import ConfigError

REQUIRED = dataclasses.MISSING
# What an INTEGER column of the state database holds (PostgreSQL and MariaDB: 32 bits, signed).
INT_MAX = 2**31 - 1



class Section:
    """Base of the configuration sections: immutable, compared by identity, one __init__ and __repr__ for
    all of them. dataclass() would compile an __init__, __repr__, __eq__, __hash__, __setattr__ and
    __delattr__ for every section at every start of every command (20 ms, a fifth of what a command with
    nothing to do costs beyond importing SQLAlchemy); the sections stay dataclasses for fields(),
    replace() and asdict()."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        fields = self.__dataclass_fields__
        names = [name for name, f in fields.items() if f.init]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, {len(args)} given")
        given = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in fields or name in given:
                problem = "unexpected" if name not in fields else "repeated"
                raise TypeError(f"{type(self).__name__}(): {problem} argument {name!r}")
            given[name] = value
        for name in names:
            if name in given:
                value = given[name]
            elif fields[name].default is not dataclasses.MISSING:
                value = fields[name].default
            elif fields[name].default_factory is not dataclasses.MISSING:
                value = fields[name].default_factory()
            else:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__dataclass_fields__)
        return f"{type(self).__name__}({values})"


def section(cls: type) -> type:
    """Make a Section subclass a dataclass without generated methods (see Section)."""
    if not issubclass(cls, Section):
        raise TypeError(f"{cls.__name__} must derive from Section")
    return dataclass(init=False, repr=False, eq=False)(cls)


@dataclass(frozen=True)
class Rule:
    """What a setting means and which values make sense."""

    doc: str
    minimum: float | None = 0          # inclusive; None: any sign
    above: float | None = None         # exclusive lower bound (timeouts, sizes that cannot be zero)
    maximum: float | None = INT_MAX
    choices: tuple[str, ...] = ()
    https: bool = False                # a URL that must be https://host...
    web: bool = False                  # a URL that must be http://host... or https://host...
    must_exist: str | None = None      # "file", "dir" or "any": checked by `config check`
    secret: bool = False               # a file holding a secret: must not be readable by others


def setting(default: Any = REQUIRED, *, doc: str, factory: Any = REQUIRED, **rule: Any) -> Any:
    """A configuration key: its default (or `factory` for a mutable one), meaning (`doc`) and rule."""
    metadata = {"rule": Rule(doc=doc, **rule)}
    if factory is not REQUIRED:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """A section's resolved annotations: resolving them (string annotations, evaluated per field) was most of
    the time a configuration took to load, once per queue and sub-table."""
    return typing.get_type_hints(cls)


def rule_of(f: dataclasses.Field) -> Rule | None:
    return f.metadata.get("rule")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               Path: "a path string", list: "a list", dict: "a table"}


def describe(value: Any) -> str:
    return "a table" if isinstance(value, dict) else f"{type(value).__name__} {value!r}"


class _Skip(Exception):
    """Stop validating the current key; its problem is already recorded."""


class Validator:
    """Builds sections from TOML tables; `problems` collects what is wrong, in file order."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        location = f"{self.source}: [{where}]" if where else f"{self.source}:"
        self.problems.append(f"{location} {message}")

    def fail(self, where: str, message: str) -> typing.NoReturn:
        self.problem(where, message)
        raise _Skip

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError("\n".join(dict.fromkeys(self.problems)))

    # -- values ------------------------------------------------------------------------------

    def value(self, annotation: Any, value: Any, where: str, key: str, rule: Rule | None) -> Any:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            if value is None:
                return None
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            return self.value(options[0], value, where, key, rule)
        if annotation is Any:
            return value
        if origin is list:
            (item,) = typing.get_args(annotation)
            if not isinstance(value, list):
                self.fail(where, f"{key}: expected a list, got {describe(value)}")
            return [self.value(item, v, where, f"{key}[{i}]", rule) for i, v in enumerate(value)]
        if origin is dict:
            _, item = typing.get_args(annotation)
            if not isinstance(value, dict):
                self.fail(where, f"{key}: expected a table, got {describe(value)}")
            return {k: self.value(item, v, where, f"{key}.{k}", rule) for k, v in value.items()}
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                self.fail(where, f"{key}: expected a table, got {describe(value)}")
            built = self.build(annotation, value, f"{where}.{key}" if where else key)
            if built is None:
                raise _Skip
            return built
        if annotation is Path:
            if not isinstance(value, str) or not value:
                self.fail(where, f"{key}: expected a path string, got {describe(value)}")
            path = Path(value).expanduser()
            return path if path.is_absolute() else (self.base_dir / path)
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (annotation is int and isinstance(value, bool)) or not isinstance(value, annotation):
            self.fail(where, f"{key}: expected {_TYPE_NAMES.get(annotation, annotation.__name__)}, got {describe(value)}")
        if rule is not None:
            self.check_rule(rule, value, where, key)
        return value

    def check_rule(self, rule: Rule, value: Any, where: str, key: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, f"{key}: must be a finite number, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if rule.above is not None and value <= rule.above:
                self.fail(where, f"{key}: must be more than {rule.above:g}, got {value}")
            if rule.minimum is not None and value < rule.minimum:
                word = "must not be negative" if rule.minimum == 0 else f"must be at least {rule.minimum:g}"
                self.fail(where, f"{key}: {word}, got {value}")
            if rule.maximum is not None and value > rule.maximum:
                self.fail(where, f"{key}: must be at most {rule.maximum:g}, got {value}")
        if isinstance(value, str):
            if rule.choices and value not in rule.choices:
                close = [c for c in rule.choices if c.lower() == value.lower()] or \
                    _close_matches(value, rule.choices, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(where, f"{key}: expected one of {', '.join(map(repr, rule.choices))}, got {value!r}{hint}")
            if rule.https or rule.web:
                scheme, _, rest = value.partition("://")
                schemes = ("https",) if rule.https else ("http", "https")
                if scheme not in schemes or not rest.split("/")[0]:
                    wanted = " or ".join(f"{s}://" for s in schemes)
                    self.fail(where, f"{key}: expected an {wanted} URL with a host, got {value!r}")

    # -- sections ----------------------------------------------------------------------------

    def key_of(self, cls: type, key: str, value: Any, where: str) -> bool:
        """Whether `key = value` is right for section `cls` on its own (its problem recorded if not): for a
        table of defaults, checked once before it is merged into each table it applies to."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields or not fields[key].init:
            names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("name", "path")]
            close = _close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})"
            self.problem(where, f"unknown key {key!r}{hint}")
            return False
        try:
            self.value(type_hints(cls)[key], value, where, key, rule_of(fields[key]))
        except _Skip:
            return False
        return True

    def build(self, cls: type, table: dict, where: str, **given: Any) -> Any:
        """The section `cls` from `table`, or None when it has problems (recorded)."""
        hints = type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name not in given and f.init and f.name != "path"]
        names = [f.name for f in fields]
        ok = True
        for key in table:
            if key not in names:
                close = _close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})"
                self.problem(where, f"unknown key {key!r}{hint}")
                ok = False
        kwargs = dict(given)
        for f in fields:
            if f.name in table:
                try:
                    kwargs[f.name] = self.value(hints[f.name], table[f.name], where, f.name, rule_of(f))
                except _Skip:
                    ok = False
            elif f.default is REQUIRED and f.default_factory is REQUIRED:
                self.problem(where, f"missing required key {f.name!r}")
                ok = False
        if not ok:
            return None
        section = cls(**kwargs)
        check = getattr(section, "problems", None)
        found = list(check()) if check else []
        for key, message in found:
            self.problem(where, f"{key}: {message}" if key else message)
        return None if found else section


def _close_matches(word: str, candidates, n: int = 1) -> list[str]:
    import difflib  # only a config with a mistake needs it

    return difflib.get_close_matches(word, candidates, n=n)
