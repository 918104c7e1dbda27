"""Errors that reach the operator as one line and a meaningful exit code."""

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2


class HarvesterError(Exception):
    """An error the operator can act on; its text is printed as is, without a traceback."""

    exit_code = EXIT_PARTIAL


class ConfigError(HarvesterError):
    """The configuration (file, key or value) is wrong."""

    exit_code = EXIT_USAGE


class UsageError(HarvesterError):
    """The command line asks for something that cannot be done as asked; nothing was changed."""

    exit_code = EXIT_USAGE


class StateError(HarvesterError):
    """The state database cannot be used as it is (wrong schema version, unreadable)."""

    exit_code = EXIT_USAGE


class StateUnreachable(HarvesterError):
    """The state database server did not answer (down, restarting, network), or no server took writes again
    within [instance] db_reconnect_seconds after losing one: the next run tries again."""


class CommitUnknown(HarvesterError):
    """The state database server went away while a COMMIT was on its way (a failover, a restart): whether the
    transaction was kept is unknown, as after a kill -9. What follows from it is decided by looking, after
    reconnecting, never by doing a backend or PanDA action again."""


class PandaError(HarvesterError):
    """PanDA answered, but not with success, or could not be reached."""


class PandaRefused(PandaError):
    """PanDA answered success:false; `message` is its text."""

    def __init__(self, call: str, message: str):
        super().__init__(f"PanDA {call}: {message}")
        self.message = message


class PandaUnreachable(PandaError):
    """PanDA did not answer (no connection, or no reply within the timeout): the rest of this run's calls
    are skipped rather than each waiting out its own timeouts."""

    SKIPPED = "skipped: PanDA did not answer earlier in this run"


class PandaNoSuchCall(PandaError):
    """The server does not have this API call (HTTP 403 "method ... is forbidden", or 404): an older server."""


class BackendError(HarvesterError):
    """A batch system or CE call failed as a whole."""


def exit_code_of(exc: BaseException) -> int:
    """The exit code an error caught on the way asks of the run: 2 for a configuration problem (a login node's
    host key that changed, a key it refuses), 1 for the rest (an outage the next run tries again)."""
    return exc.exit_code if isinstance(exc, HarvesterError) else EXIT_PARTIAL
