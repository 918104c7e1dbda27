"""The root command: global options and a lazy command table.

`harvester-cli --help` reads only the table below; a command's module (and whatever it imports:
SQLAlchemy, requests, htcondor2, pyarcrest) is imported only when that command runs. cron starts
this program many times a minute.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from harvester_cli import __version__
from harvester_cli.errors import HarvesterError

# name -> (module, one-line summary)
COMMANDS = {
    "fetch-jobs": ("harvester_cli.commands.fetch_jobs", "Get jobs from PanDA for push-mode queues."),
    "submit": ("harvester_cli.commands.submit", "Decide how many workers each queue needs and submit them."),
    "poll": ("harvester_cli.commands.poll", "Check workers at their backend and record what changed."),
    "propagate": ("harvester_cli.commands.propagate", "Send job/worker updates and statistics to PanDA; take its commands."),
    "sweep": ("harvester_cli.commands.sweep", "Kill workers marked for killing; forget old final workers and jobs."),
    "kill-workers": ("harvester_cli.commands.kill_workers", "Mark workers for killing (by id, queue, CE, state, age)."),
    "plan": ("harvester_cli.commands.plan", "Print how many workers each queue would get, and why (no submission)."),
    "cycle": ("harvester_cli.commands.cycle", "Run fetch-jobs, submit, poll, propagate and sweep in order."),
    "status": ("harvester_cli.commands.status", "Jobs and workers by state, per queue."),
    "downtime": ("harvester_cli.commands.downtime", "Announce, list and remove downtimes of queues and CEs (UTC)."),
    "workers": ("harvester_cli.commands.workers", "List workers, one row each."),
    "jobs": ("harvester_cli.commands.jobs", "List jobs, one row each."),
    "renew-proxy": ("harvester_cli.commands.renew_proxy", "Renew proxies and token files; fall back to the next certificate; alert."),
    "clean-logs": ("harvester_cli.commands.clean_logs", "Delete old logs by age and size per class; never an active worker's."),
    "serve-logs": ("harvester_cli.commands.serve_logs", "Serve the log directory read-only over HTTP."),
    "config": ("harvester_cli.commands.config", "Check the configuration and print it resolved."),
    "db": ("harvester_cli.commands.db", "State database maintenance (schema upgrade)."),
    "demo": ("harvester_cli.commands.demo", "Run a complete local demo: PanDA simulator, local workers, SQLite."),
}


# The commands that do the work (what cron runs): they check this host as `config check` does before they start.
HOST_CHECKED = ("cycle", "fetch-jobs", "submit", "poll", "propagate", "sweep", "kill-workers", "plan")


@dataclass
class Globals:
    """Global options, shared by every command through the click context."""

    config_path: Path | None = None
    state: str | None = None
    queues: tuple[str, ...] = ()
    json: bool = False
    verbosity: int = 0
    command: str | None = None
    log_memory: bool = False
    command_log_file: Path | None = None
    # What the command handled (for its run record and metrics), and a cycle's steps as (name, started,
    # ended, exit code, items).
    items: int | None = None
    step_runs: list = field(default_factory=list)
    _config: object = field(default=None, repr=False)
    _instance: object = field(default=None, repr=False)

    def config(self):
        """The configuration, loaded and validated once; the command's own log file starts with it. The
        commands cron runs refuse what `config check` refuses on this host too (a missing proxy, a log_dir
        below a file, a missing client library): exit 2, which cron mails, rather than exit 1 every minute."""
        if self._config is None:
            from harvester_cli import config

            loaded = config.load(self.config_path)
            if self.state is not None and (problem := config.state_url_problem(self.state)):
                raise config.ConfigError(f"--state: {problem}")
            problems = []
            if self.command in HOST_CHECKED:
                import dataclasses

                checked = dataclasses.replace(loaded, state=self.state) if self.state else loaded
                problems = config.environment_problems(checked)
            self._start_command_log(loaded)
            if problems:
                raise config.ConfigError("\n".join(problems))
            self._config = loaded
        return self._config

    def _start_command_log(self, config) -> None:
        settings = config.command_log
        if not self.command or not settings.enabled:
            return
        from harvester_cli.config.environment import directory_problem
        from harvester_cli.site import logs

        if directory_problem(config.logs):   # `config check` and the work commands say so, once
            return
        root = logging.getLogger()
        for old in [h for h in root.handlers if h.name == "harvester-cli-command-log"]:
            root.removeHandler(old)
            old.close()
        try:
            handler = logs.open_command_log(config.logs, self.command, max_bytes=settings.max_bytes,
                                            backups=settings.backups, memory=settings.memory or self.log_memory,
                                            level=logging.DEBUG if self.verbosity >= 2 else logging.INFO)
        except OSError as exc:   # a read-only or full log directory must not stop the work
            logging.getLogger("harvester_cli").warning("no command log under %s: %s", config.logs, exc.strerror)
            return
        root.addHandler(handler)
        root.setLevel(min(root.level or logging.WARNING, handler.level))
        self.command_log_file = Path(handler.baseFilename)
        logging.getLogger("harvester_cli").info("start: harvester-cli %s (pid %d)", logs.command_line(sys.argv[1:]),
                                                os.getpid())

    def instance(self):
        """The configured instance (config loaded and validated; store and PanDA made on first use)."""
        if self._instance is None:
            from harvester_cli.config import state_url_from
            from harvester_cli.instance import Instance

            self._instance = Instance(self.config(), state_url_from(self.state) if self.state else None)
        return self._instance

    def output(self):
        from harvester_cli.output import Output

        # The commands that do the work say what they asked of the database (the read-only ones keep their shape).
        working = self.command in ("cycle", "fetch-jobs", "submit", "poll", "propagate", "sweep")
        return Output(json_mode=self.json, quiet=self.verbosity < 0, database=self._database_stats if working else None)

    def _database_stats(self) -> dict | None:
        """The state database's use by this command, if it opened the database."""
        if self._instance is None or "store" not in self._instance.__dict__:
            return None
        return self._instance.store.stats()

    def selected(self, extra: tuple[str, ...] = ()):
        return self.instance().config.select_queues(tuple(dict.fromkeys(self.queues + tuple(extra))))


def _log_level(verbosity: int) -> int:
    return logging.ERROR if verbosity < 0 else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]


_STDERR_HANDLER = "harvester-cli-stderr"


def _set_stderr_level(level: int) -> None:
    """-v/-q govern what reaches stderr; the command log file keeps INFO (DEBUG with -vv) either way."""
    root = logging.getLogger()
    levels = [level]
    for handler in root.handlers:
        if handler.name == _STDERR_HANDLER:
            handler.setLevel(level)
            if hasattr(handler.formatter, "full"):
                handler.formatter.full = level <= logging.DEBUG
        elif handler.name == "harvester-cli-command-log":
            if level <= logging.DEBUG:
                handler.setLevel(logging.DEBUG)
            levels.append(handler.level)
    root.setLevel(min(levels))


def _setup_stderr_logging(level: int) -> None:
    from harvester_cli.site.logs import RedactingFilter, ShortTracebackFormatter

    root = logging.getLogger()
    if not any(h.name == _STDERR_HANDLER for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.name = _STDERR_HANDLER
        handler.setFormatter(ShortTracebackFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    _set_stderr_level(level)


def _after_config(ctx: click.Context, _param, value: str | None) -> None:
    if value:
        g = ctx.find_object(Globals)
        g.config_path, g._config, g._instance = Path(value), None, None


def _after_state(ctx: click.Context, _param, value: str | None) -> None:
    if value:
        g = ctx.find_object(Globals)
        g.state, g._instance = value, None


def _after_log_memory(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_object(Globals).log_memory = True


def _after_json(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_object(Globals).json = True


def _after_verbose(ctx: click.Context, _param, value: int) -> None:
    if value:
        g = ctx.find_object(Globals)
        g.verbosity = max(g.verbosity, 0) + value
        _set_stderr_level(_log_level(g.verbosity))


def _after_quiet(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_object(Globals).verbosity = -1
        _set_stderr_level(_log_level(-1))


# The global options, accepted after the command name too (`harvester-cli status --json --config F`), and so
# listed in every command's help.
CONFIG_HELP = "Instance configuration (TOML). Default: $XDG_CONFIG_HOME/harvester-cli/config.toml."
STATE_HELP = "State database URL or SQLite file path (overrides the configuration)."
_AFTER_COMMAND = (
    # No envvar here: the root command reads it, and an explicit --config before the command must win.
    (["--config", "config_after"], {"metavar": "FILE", "callback": _after_config,
                                    "help": CONFIG_HELP + "  [env var: HARVESTER_CLI_CONFIG]"}),
    (["--state", "state_after"], {"metavar": "URL", "callback": _after_state,
                                  "help": STATE_HELP + "  [env var: HARVESTER_CLI_STATE]"}),
    (["--json", "json_after"], {"is_flag": True, "callback": _after_json, "help": "Print one JSON object for scripts."}),
    (["-v", "--verbose", "verbose_after"], {"count": True, "callback": _after_verbose,
                                            "help": "More log output on stderr (-vv: debug, with tracebacks)."}),
    (["-q", "--quiet", "quiet_after"], {"is_flag": True, "callback": _after_quiet,
                                        "help": "Print nothing but errors."}),
    (["--log-memory", "log_memory_after"], {"is_flag": True, "callback": _after_log_memory,
                                            "help": "Append the process's memory use to every command log line."}),
)


_NB_HYPHEN = "\u2011"


class HelpFormatter(click.HelpFormatter):
    """Help that never breaks a word: click's wrapping breaks at hyphens (`harvester-` at the end of a line,
    `cli` on the next), so hyphens are non-breaking while the text is wrapped and plain again in the result."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog.replace("-", _NB_HYPHEN), args.replace("-", _NB_HYPHEN), prefix)

    def write_text(self, text: str) -> None:
        if text.startswith("\b\n"):   # examples: kept as written, but within the terminal's width
            room = self.width - self.current_indent
            text = "\n\n".join("\n".join(_fit_example(line, room) for line in p.split("\n"))
                               for p in text.split("\n\n"))
        super().write_text(text.replace("-", _NB_HYPHEN))

    def write_dl(self, rows, *args, **kwargs) -> None:
        super().write_dl([(a.replace("-", _NB_HYPHEN), b.replace("-", _NB_HYPHEN)) for a, b in rows], *args, **kwargs)

    def getvalue(self) -> str:
        return super().getvalue().replace(_NB_HYPHEN, "-")


def _fit_example(line: str, room: int) -> str:
    """An example line that is too long for the help's width: its comment on a line of its own above it, and
    a command still too long continued on the next line (` \\`), so that it still pastes into a shell."""
    if len(line) <= room or line == "\b":
        return line
    lead = line[:len(line) - len(line.lstrip())]
    if not re.match(r"(harvester-cli|curl|python|\* )", line.strip()):   # prose: at words
        from harvester_cli.output import fold

        return "\n".join(lead + piece for piece in fold(line.strip(), room - len(lead)))
    command, hash_, comment = line.strip().partition("  # ")
    out = [f"{lead}# {comment.strip()}"] if hash_ else []
    words, current = re.findall(r"""(?:"[^"]*"|'[^']*'|\S)+""", command), lead   # "bad node" stays one word
    for word in words:
        if current.strip() and len(current) + 1 + len(word) + 2 > room:
            out.append(current + " \\")
            current = lead + "    " + word
        else:
            current = f"{current} {word}" if current.strip() else current + word
    return "\n".join(out + [current])


class Context(click.Context):
    formatter_class = HelpFormatter


def _with_output_options(command: click.Command) -> click.Command:
    """The global options after the command's name too, but those it has no use for (a command may name them
    in `without_global_options`: `config example` reads no state database); examples printed as written."""
    names = {p.name for p in command.params}
    unused = set(getattr(command, "without_global_options", ()))
    for decls, attrs in _AFTER_COMMAND:
        if decls[-1] not in names and decls[-1].removesuffix("_after") not in unused:
            command.params.append(click.Option(decls, expose_value=False, **attrs))
    command.context_class = Context
    if command.epilog and "\b" not in command.epilog:   # an example is never rewrapped into two lines
        command.epilog = "\n\n".join(f"\b\n{paragraph}" for paragraph in command.epilog.split("\n\n"))
    for sub in getattr(command, "commands", {}).values():
        _with_output_options(sub)
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return _with_output_options(importlib.import_module(COMMANDS[name][0]).command)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:   # printed with click.echo (config example, db upgrade --sql) into `| head`
            from harvester_cli.output import stdout_closed

            stdout_closed()
            return 0

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])


# Help follows the terminal's width (up to 200 columns): examples and paths stay on one line.
@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 200},
             epilog="Example: harvester-cli --config /etc/harvester-cli/config.toml cycle")
@click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="HARVESTER_CLI_CONFIG",
              show_envvar=True, metavar="FILE", help=CONFIG_HELP)
@click.option("--state", metavar="URL", envvar="HARVESTER_CLI_STATE", show_envvar=True, help=STATE_HELP)
@click.option("--queue", "queues", multiple=True, metavar="NAME", help="Only this queue (repeatable).")
@click.option("--json", "json_", is_flag=True, help="Print one JSON object for scripts.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--log-memory", is_flag=True,
              help="Append the process's memory use to every line of the command log (<log_dir>/commands/).")
@click.version_option(__version__, prog_name="harvester-cli")
@click.pass_context
def cli(ctx: click.Context, config_path, state, queues, json_, verbose, quiet, log_memory) -> None:
    """PanDA Harvester as composable one-shot commands.

    Exit codes: 0 ok, 1 partial failure or outage (recorded, retried next run), 2 bad usage or configuration
    (including what the work commands refuse at start), 130 interrupted.
    Each command also logs to <log_dir>/commands/<command>.log (rotated by size).
    """
    _setup_stderr_logging(_log_level(-1 if quiet else verbose))
    ctx.obj = Globals(config_path, state, tuple(queues), json_, -1 if quiet else verbose,
                      command=ctx.invoked_subcommand, log_memory=log_memory)
    _refuse_bytes_that_are_not_text(ctx.obj)


def _refuse_bytes_that_are_not_text(g: Globals) -> None:
    """Names, paths, reasons and URLs go to the state database, PanDA, sockets and UTF-8 logs as text: an
    argument holding bytes that are not UTF-8 is refused before anything is done (after the command log's
    start line, which shows them escaped)."""
    for arg in sys.argv[1:]:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            from harvester_cli.errors import UsageError
            from harvester_cli.site.logs import command_line

            try:
                g.config()   # the command log's start line
            except HarvesterError:
                pass
            raise UsageError(f"argument '{command_line([arg])}' is not UTF-8 text: harvester-cli takes its arguments "
                             "(names, paths, reasons) as UTF-8; nothing was done") from None


cli.context_class = Context


def _to_command_log(level: int, message: str, exc_info=None) -> None:
    """A line for the command log file only (stderr already got its own one-line message)."""
    handlers = [h for h in logging.getLogger().handlers if h.name == "harvester-cli-command-log"]
    if handlers:
        record = logging.getLogger("harvester_cli").makeRecord("harvester_cli", level, __file__, 0, message, None,
                                                              exc_info)
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def main() -> None:
    started = time.monotonic()
    try:
        _main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        _to_command_log(logging.INFO, f"end: exit {code} after {time.monotonic() - started:.2f} s")
        raise
    except BaseException:
        _to_command_log(logging.ERROR, "crashed", sys.exc_info())
        _to_command_log(logging.INFO, f"end: exit 1 after {time.monotonic() - started:.2f} s")
        raise


def _main() -> None:
    try:
        code = cli.main(standalone_mode=False, prog_name="harvester-cli")
    except click.exceptions.Abort as exc:
        # Ctrl-C: what the command left behind (a submission's withdrawn workers), or just that it stopped
        said = str(exc.__cause__) if isinstance(exc.__cause__, KeyboardInterrupt) else ""
        _to_command_log(logging.WARNING, said or "aborted")
        click.echo(f"harvester-cli: {said}" if said else "aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HarvesterError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:   # a configuration may have several problems
            _to_command_log(logging.ERROR, f"error: {line}")
            click.echo(f"harvester-cli: error: {line}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # A database that is locked or gone, a full disk: one line for cron, not a traceback (-vv shows it).
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(exc, (SQLAlchemyError, OSError)):
            raise
        logging.getLogger("harvester_cli").debug("details", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _to_command_log(logging.ERROR, f"error: {type(exc).__name__}: {first}", sys.exc_info())
        click.echo(f"harvester-cli: error: {type(exc).__name__}: {first}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


