"""What one harvester instance is made of: its configuration, state database, PanDA client and backends, each
made on first use, and what they share (this host's name, the log tree's URLs, the pilots' command line).

Imported by the steps and the commands; imports the layers below (backends, state, panda, site, config,
model), never a step or a command.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import Counter
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from harvester_cli.config import Config, PandaConfig, QueueConfig
from harvester_cli.faults import fault_point

if TYPE_CHECKING:   # the backends load when a command first needs one (`status` never does)
    from harvester_cli.backends.base import Backend, WorkerRef

log = logging.getLogger(__name__)


# Seconds a process keeps the downtimes it read (a long submission asks at every backend batch).
DOWNTIMES_TTL = 30.0


class Instance:
    def __init__(self, config: Config, state_url: str | None = None):
        self.config = config
        self.state_url = state_url or config.state_url
        self._backends: dict[str, Backend] = {}
        self._pilot_parts: dict[tuple, dict[str, str]] = {}   # what every pilot of a queue shares, quoted
        # steps.registration.Registration of this run, once known (fetch and submit of one cycle share it)
        self.registration = None
        # Announced downtimes, read at most every DOWNTIMES_TTL seconds: (when read, the list); the GOCDB feed's
        # parse by (path, mtime, size); what went wrong reading the feed (status and plan say so).
        self._downtimes: tuple[float, list] | None = None
        self._gocdb: tuple[tuple, list] | None = None
        self.downtime_problems: list[str] = []
        # What this process counted for the metrics' counters: (family, sorted label pairs) -> amount. Added
        # to the state database's counters after the command (steps.monitor.after_command).
        self.tally: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._unreachable: Exception | None = None   # the state database did not answer: not asked again this run

    def count(self, family: str, amount: float = 1, **labels: object) -> None:
        self.tally[(family, tuple(sorted((k, "" if v is None else str(v)) for k, v in labels.items())))] += amount

    @cached_property
    def store(self):
        from harvester_cli.errors import StateUnreachable
        from harvester_cli.state.store import Store

        if self._unreachable is not None:   # waited for once (db_reconnect_seconds): the run's one line says so
            raise self._unreachable
        try:
            store = Store(self.state_url, lease_seconds=self.config.lease_seconds, host=self.host,
                          timeout=self.config.instance.db_timeout,
                          reconnect_seconds=self.config.instance.db_reconnect_seconds)
        except StateUnreachable as exc:
            self._unreachable = exc
            raise
        fault_point("store_opened")   # connected, its connection idle: the failover tests move the server now
        return store

    @property
    def host(self) -> str:
        """This host among those sharing the state database ([instance] host, default the host name)."""
        return self.config.host

    @property
    def cache_dir(self) -> Path:
        """Small files worth keeping between runs (PanDA's resource type definitions)."""
        return Path(self.config.work_root).parent / "cache"

    def store_exists(self) -> bool:
        """Whether the state database is there already (a SQLite file that exists, or any server URL)."""
        if self.state_url.startswith("sqlite:///") and self.state_url != "sqlite:///:memory:":
            return Path(self.state_url.removeprefix("sqlite:///")).exists()
        return True

    @cached_property
    def panda_config(self) -> PandaConfig:
        """[panda] with its credential profiles resolved to the files renew-proxy maintains."""
        panda = self.config.panda
        if panda.proxy_profile:
            panda = dataclasses.replace(panda, proxy=self.config.proxies[panda.proxy_profile].file)
        if panda.token_profile:
            panda = dataclasses.replace(panda, token_file=self.config.tokens[panda.token_profile].file)
        return panda

    def proxy_for(self, queue: QueueConfig) -> Path | None:
        """The proxy a queue's workers get: its proxy_profile's file, else the PanDA client's proxy."""
        if queue.proxy_profile:
            return self.config.proxies[queue.proxy_profile].file
        return self.panda_config.proxy

    @cached_property
    def panda(self):
        from harvester_cli.panda.client import PandaClient

        return PandaClient(self.panda_config, self.config.harvester_id)

    def backend(self, queue: QueueConfig) -> Backend:
        if queue.name not in self._backends:
            from harvester_cli import backends
            from harvester_cli.backends.base import BackendContext

            context = BackendContext(
                harvester_id=self.config.harvester_id, work_root=self.config.work_root, host=self.host,
                panda_url=self.config.panda.url, proxy=self.proxy_for(queue), ca=self.config.panda.ca,
                ce_statistics=self.ce_statistics, ce_credentials=queue.ce_credentials,
                ce_token=self.ce_token_finder(queue),
                blocked_ces=self.blocked_ces,
                pilot_files=self.pilot_files(queue) if backends.backend_class(queue.backend).delivers_files else {},
            )
            self._backends[queue.name] = backends.create(queue.backend, queue, context)
        return self._backends[queue.name]

    def retires_queued(self, queue: QueueConfig) -> bool:
        """Whether the queue's backend can remove a worker only while it still waits in its batch queue."""
        from harvester_cli import backends

        return backends.backend_class(queue.backend).retires_queued

    def host_bound(self, queue: QueueConfig) -> bool:
        """Whether only the host that made a worker of this queue may poll, kill and clean it."""
        from harvester_cli import backends

        return backends.backend_class(queue.backend).is_host_bound(queue.backend_options)

    def host_filter(self, queue: QueueConfig) -> str | None:
        """Whose workers of `queue` this host works, as the state functions take it: None for every host's,
        this host's name when the backend is host-bound (then the workers it made, and those from before
        hosts were recorded)."""
        return self.host if self.host_bound(queue) else None

    def ce_token_finder(self, queue: QueueConfig):
        """ce_token(endpoint, flavour) -> CEToken of the queue's per-CE token profile, or None without one."""
        if queue.ce_token_profile is None:
            return None
        from harvester_cli.backends.base import CEToken
        from harvester_cli.site.tokens import ce_token

        profile = self.config.tokens[queue.ce_token_profile]

        def find(endpoint: str, flavour: str) -> CEToken:
            return CEToken(*ce_token(profile, endpoint, flavour))

        return find

    def pilot_files(self, queue: QueueConfig) -> dict[str, Path]:
        """The pilot's PanDA token (and token key) by the name they have beside the job."""
        if queue.pilot_token_profile is None:
            return {}
        token = self.config.tokens[queue.pilot_token_profile].file
        files = {token.name: token}
        if queue.pilot_token_key is not None:
            files[queue.pilot_token_key.name] = queue.pilot_token_key
        return files

    def ce_statistics(self, queue: str, since: float, by: str = "computing_element") -> dict[str, dict[str, int]]:
        from harvester_cli.state.views import ce_statistics

        return ce_statistics(self.store, queue, since, by)

    def contacts(self) -> list[tuple[str, str, bool, str | None, float]]:
        """(queue, login node, answered, why not, when) of every login node the backends of this run tried."""
        return [(queue, c.endpoint, c.answered, c.problem, c.at) for queue, backend in self._backends.items()
                for c in backend.contacts()]
    # -- downtimes ---------------------------------------------------------------------------

    def downtimes(self, fresh: bool = False) -> list:
        """Every announced downtime not over yet: the configuration's, the state database's (added on any
        host) and the GOCDB feed's (config.downtimes.Downtime). Read again after DOWNTIMES_TTL seconds (a
        submission asks at every backend batch), or when `fresh`."""
        from harvester_cli import model
        from harvester_cli.state import downtimes as stored

        at = model.now()
        if not fresh and self._downtimes is not None and at - self._downtimes[0] < DOWNTIMES_TTL:
            return self._downtimes[1]
        found = [entry.downtime() for entry in self.config.downtimes.scheduled]
        with self.store.reading() as tx:
            found += stored.listed(tx, after=at)
        found += self._gocdb_downtimes()
        found = [d for d in found if d.end > at]
        self._downtimes = (at, found)
        return found

    def _gocdb_downtimes(self) -> list:
        from harvester_cli.config.downtimes import from_gocdb

        path = self.config.downtimes.gocdb_file
        self.downtime_problems = []
        if path is None:
            return []
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            if self._gocdb is None or self._gocdb[0] != key:
                self._gocdb = (key, from_gocdb(path.read_bytes()))
        except OSError as exc:
            self.downtime_problems.append(f"GOCDB downtime feed {path}: {exc.strerror}: its downtimes are not known")
        except ValueError as exc:
            self.downtime_problems.append(f"GOCDB downtime feed {path}: {exc}: its downtimes are not known")
        else:
            return self._gocdb[1]
        log.warning("%s", self.downtime_problems[-1])
        return []

    def blocked_ces(self, queue: str, ces: list[str], walltime: float) -> dict[str, str]:
        """{CE: why} for those of `ces` no new worker of `queue` may go to now (BackendContext.blocked_ces)."""
        from harvester_cli import model
        from harvester_cli.config.downtimes import blocked_ces

        return blocked_ces(self.downtimes(), queue, ces, model.now(), walltime)

    def close(self) -> None:
        for backend in self._backends.values():
            close = getattr(backend, "close", None)
            if close:
                close()
        if "store" in self.__dict__:
            self.store.close()
        if "panda" in self.__dict__:
            self.panda.close()

    # -- logs --------------------------------------------------------------------------------

    def worker_log_dir(self, queue: str, worker_id: int, when: float) -> Path:
        """Per day, per queue, per worker: <log_dir>/workers/YYYY-MM-DD/<queue>/<worker_id>/."""
        return self.worker_log_root(queue, when) / str(worker_id)

    def worker_log_root(self, queue: str, when: float) -> Path:
        """The directory of a queue's worker log directories of `when`'s day."""
        day = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d")
        return self.config.logs / "workers" / day / queue

    def log_url(self, path: Path | str | None) -> str | None:
        """The public URL of a file in the log tree (log_url from config), or the file path without one."""
        if path is None:
            return None
        path = Path(path)
        if not self.config.log_url:
            return str(path)
        try:
            relative = path.relative_to(self.config.logs)
        except ValueError:
            return str(path)
        return f"{self.config.log_url.rstrip('/')}/{relative.as_posix()}"

    # -- pilots ------------------------------------------------------------------------------

    def pilot_environment(self, queue: QueueConfig, worker_id: int, resource_type: str) -> dict[str, str]:
        # The same for every worker of a queue and resource type but its id (submit asks for thousands).
        key = ("environment", queue.name, resource_type)
        if key not in self._pilot_parts:
            self._pilot_parts[key] = self._pilot_environment(queue, resource_type)
        return {**self._pilot_parts[key], "HARVESTER_WORKER_ID": str(worker_id)}

    def _pilot_environment(self, queue: QueueConfig, resource_type: str) -> dict[str, str]:
        panda = self.config.panda
        env = {
            "HARVESTER_PANDA_URL": panda.url, "PANDA_QUEUE": queue.site, "PANDA_RESOURCE_TYPE": resource_type,
            "PANDA_PROD_SOURCE_LABEL": queue.prod_source_label, "PANDA_JOB_TYPE": queue.job_type,
            "HARVESTER_ID": self.config.harvester_id,
        }
        if queue.background:
            env["PANDA_BACKGROUND"] = "1"
        if panda.allow_test_pilot:   # the test pilot runs only where the configuration allows it
            env["HARVESTER_TEST_PILOT"] = "1"
        proxy = self.proxy_for(queue)
        if queue.pilot_token_profile:
            # PanDA pilots read PANDA_AUTH_TOKEN (and the key) relative to their directory when the files
            # travel with the job, or as absolute paths on this host's (shared) file system.
            from harvester_cli import backends

            delivered = backends.backend_class(queue.backend).delivers_files
            for variable, path in (("PANDA_AUTH_TOKEN", self.config.tokens[queue.pilot_token_profile].file),
                                   ("PANDA_AUTH_TOKEN_KEY", queue.pilot_token_key)):
                if path is not None:
                    env[variable] = path.name if delivered else str(path)
            origin = queue.pilot_token_origin or panda.token_origin
            if origin:
                env["PANDA_AUTH_ORIGIN"] = origin
        elif proxy:
            env["X509_USER_PROXY"] = str(proxy)
        if panda.ca:
            env["HARVESTER_PANDA_CA"] = str(panda.ca)
            if panda.ca.is_dir():
                env["X509_CERT_DIR"] = str(panda.ca)
        return env

    def pilot_command(self, queue: QueueConfig, worker_id: int, resource_type: str, n_core: int,
                      memory_mb: int, walltime: int | None = None) -> str:
        """The worker's pilot command; `walltime`: the worker's when a backfill window shortened the queue's."""
        walltime = walltime or queue.walltime
        key = ("command", queue.name, resource_type, n_core, memory_mb, walltime)
        if key not in self._pilot_parts:
            import shlex

            panda = self.config.panda
            values = {
                "queue": queue.site, "harvester_id": self.config.harvester_id, "resource_type": resource_type,
                "n_core": n_core, "memory_mb": memory_mb, "walltime": walltime, "panda_url": panda.url,
                "prod_source_label": queue.prod_source_label, "job_type": queue.job_type, "python": sys.executable,
                "ca": panda.ca or "", "proxy": self.proxy_for(queue) or "",
            }
            self._pilot_parts[key] = {k: shlex.quote(str(v)) for k, v in values.items()}
        return queue.pilot.format(**self._pilot_parts[key], worker_id=int(worker_id))


def worker_ref(row) -> WorkerRef:
    """A store row of the workers table as the backends see it."""
    from harvester_cli.backends.base import WorkerRef

    return WorkerRef(row.worker_id, row.queue, row.batch_id, row.submission_host, row.computing_element, row.status,
                     row.log_dir or None, row.submit_time, row.kill_reason)
