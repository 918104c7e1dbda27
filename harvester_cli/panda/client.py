"""The PanDA server v1 API (docs/panda-api.md) over one keep-alive HTTPS session.

Idempotent calls are retried with backoff on network errors and 5xx answers. `acquire_jobs` is retried
only when the request cannot have reached the server (connection refused, connect timeout): after a read
timeout the server may already have marked the jobs sent, and a blind retry would lose them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from harvester_cli import __version__
from harvester_cli.config import PandaConfig
from harvester_cli.errors import PandaError, PandaNoSuchCall, PandaRefused, PandaUnreachable
from harvester_cli.panda import commands as panda_commands
from harvester_cli.site import bearer
from harvester_cli.site.secretfiles import SecretFileError, read_token

log = logging.getLogger(__name__)

NO_JOBS = "No jobs in PanDA"
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Heartbeat:
    """PanDA's answer to a heartbeat: accepted, or refused with its message (the very first heartbeat of an
    unknown harvester id registers it but is refused)."""

    accepted: bool
    message: str | None = None


@dataclass(frozen=True)
class JobUpdateOutcome:
    """PanDA's answer to one job update of a bulk call."""

    job_id: int | None
    accepted: bool
    command: str | None = None    # e.g. "tobekilled", "alreadydone" (accepted updates only)
    message: str | None = None    # why it was refused

    @property
    def kill(self) -> bool:
        """PanDA wants the job's worker killed."""
        return self.accepted and "tobekilled" in (self.command or "")


@dataclass(frozen=True)
class JobState:
    """What PanDA has of one job now (pilot/get_job_status): its status ("not found" for an id it does not
    have) and attempt number (a reassigned job has a higher one)."""

    panda_id: int
    status: str
    attempt_nr: int | None


@dataclass(frozen=True)
class WorkerUpdateOutcome:
    worker_id: int | None
    accepted: bool


def _job_outcome(update: dict, answer: Any) -> JobUpdateOutcome:
    job_id = update.get("job_id")
    data = answer.get("data") if isinstance(answer, dict) else None
    if isinstance(answer, dict) and answer.get("success") and isinstance(data, dict) and data.get("StatusCode") == 0:
        command = data.get("command")
        return JobUpdateOutcome(job_id, True, None if command in (None, "NULL") else str(command))
    message = answer.get("message") if isinstance(answer, dict) else str(answer)
    return JobUpdateOutcome(job_id, False, message=f"PanDA refused: {message} {data or ''}".strip())


class _Transient(Exception):
    """An HTTP 5xx answer: worth retrying an idempotent call."""


def _decode_datetimes(obj: dict) -> Any:
    if set(obj) == {"__datetime__"}:
        return obj["__datetime__"]
    return obj


def _connect_failure(exc: BaseException) -> bool:
    """True only if the request certainly did not reach the server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        return any(s in text for s in ("NewConnectionError", "Connection refused", "NameResolutionError",
                                       "Failed to resolve", "No route to host"))
    return False


def _silent(exc: BaseException) -> bool:
    """The server could not be reached, or took the request and did not reply in time. A reset, a 5xx, a
    garbled or refused answer are answers: they fail one call, not the run."""
    return _connect_failure(exc) or isinstance(exc, requests.exceptions.ReadTimeout)


def _network_failure(exc: BaseException) -> bool:
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, _Transient))


class PandaClient:
    def __init__(self, config: PandaConfig, harvester_id: str, *, retry_wait: float = 1.0):
        self.config = config
        self.harvester_id = harvester_id
        self.base = config.url.rstrip("/")
        self.retry_wait = retry_wait
        self.session = requests.Session()
        self.session.headers.update({
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"harvester-cli/{__version__}",
        })
        if config.proxy:
            self.session.cert = str(config.proxy)
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE override Session.verify.
        self.verify: str | bool = str(config.ca) if config.ca else True
        self._token_stamp: tuple[float, int] | None = None
        self._token_expiry: float | None = None   # the token's exp claim, when it has one
        # (endpoint, kind) -> failed calls in this process; kind is network, http or refused. The metrics
        # add them to the counters in the state database after the command.
        self.errors: Counter[tuple[str, str]] = Counter()
        # Why this run stopped calling PanDA (it did not answer), or None. One silent server costs one call's
        # timeout and retries, not every call's: the next run tries again.
        self.unreachable: str | None = None
        self.skipped = 0   # calls not made since

    def close(self) -> None:
        self.session.close()

    # -- transport ---------------------------------------------------------------------------

    def _refresh_token(self) -> None:
        """Token files are rewritten by another process: re-read when the file changes."""
        path = self.config.token_file
        if not path:
            return
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise PandaError(f"token file {path}: {exc.strerror}") from None
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._token_stamp:
            try:
                token = read_token(path)
            except SecretFileError as exc:
                raise PandaError(str(exc)) from None
            self.session.headers["Authorization"] = f"Bearer {token}"
            self.session.headers["Origin"] = self.config.token_origin or ""
            self._token_stamp, self._token_expiry = stamp, bearer.expiry(token)
        if self._token_expiry is not None and self._token_expiry <= time.time():
            # PanDA would only refuse it: say what is wrong and what renews it, and send nothing
            renews = (f"`harvester-cli renew-proxy` renews it ([tokens.{self.config.token_profile}])"
                      if self.config.token_profile else
                      "renew it (a [tokens.NAME] profile with `harvester-cli renew-proxy` in cron keeps it fresh)")
            raise PandaError(f"token file {path}: the token expired {int(time.time() - self._token_expiry)} s ago: "
                             f"{renews}")

    def _send(self, method: str, path: str, body: dict | None, params: dict | None) -> Any:
        self._refresh_token()
        url = f"{self.base}/{path}"
        timeout = (min(CONNECT_TIMEOUT, self.config.timeout), self.config.timeout)
        if method == "POST":
            response = self.session.post(url, data=json.dumps(body or {}), timeout=timeout, verify=self.verify)
        else:
            response = self.session.get(url, params=params, timeout=timeout, verify=self.verify)
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code in (403, 404) and ("forbidden" in response.text or response.status_code == 404):
            raise PandaNoSuchCall(f"PanDA {path}: HTTP {response.status_code}: {response.text[:200].strip()}")
        if response.status_code != 200:
            raise PandaError(f"PanDA {path}: HTTP {response.status_code}: {response.text[:200].strip()}")
        try:
            return json.loads(response.text, object_hook=_decode_datetimes)
        except ValueError:
            raise PandaError(f"PanDA {path}: answer is not JSON: {response.text[:200]!r}") from None

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None,
             retry_if: Callable[[BaseException], bool] = _network_failure, refusal_expected: bool = False) -> Any:
        """One API call; returns `data` on success, raises PandaRefused on success:false (not counted as an
        error when `refusal_expected`: a quirk the caller handles, like the first heartbeat's)."""
        if self.unreachable:
            self.skipped += 1
            raise PandaUnreachable(f"PanDA {path}: {PandaUnreachable.SKIPPED}")
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.config.retries)),
            wait=wait_exponential(multiplier=self.retry_wait, max=30),
            retry=retry_if_exception(retry_if),
            reraise=True,
        )
        try:
            answer = retrying(self._send, method, path, body, params)
        except (requests.exceptions.RequestException, _Transient) as exc:
            self.errors[(path, "network" if not isinstance(exc, _Transient) else "http")] += 1
            if _silent(exc):
                self.unreachable = f"{self.base} did not answer {path} ({_short(exc)})"
                log.warning("PanDA at %s did not answer %s (%s): this run skips its other PanDA calls; the next run "
                            "tries again", self.base, path, _short(exc))
                raise PandaUnreachable(f"PanDA {path}: {_short(exc)}") from None
            raise PandaError(f"PanDA {path}: {_short(exc)}") from None
        except OSError as exc:   # e.g. the proxy or CA file is missing: requests raises a bare OSError
            self.errors[(path, "network")] += 1
            raise PandaError(f"PanDA {path}: {exc}") from None
        except PandaError:
            self.errors[(path, "http")] += 1
            raise
        if not isinstance(answer, dict) or "success" not in answer:
            self.errors[(path, "http")] += 1
            raise PandaError(f"PanDA {path}: unexpected answer {str(answer)[:200]!r}")
        if not answer["success"]:
            message = str(answer.get("message", ""))
            # "No jobs in PanDA" is an answer, not an error
            if not refusal_expected and not (path == "pilot/acquire_jobs" and NO_JOBS in message):
                self.errors[(path, "refused")] += 1
            raise PandaRefused(path, message)
        return answer.get("data")

    # -- calls -------------------------------------------------------------------------------

    def is_alive(self) -> bool:
        self.call("GET", "system/is_alive")
        return True

    def heartbeat(self, data: dict) -> Heartbeat:
        try:
            self.call("POST", "harvester/heartbeat", {"harvester_id": self.harvester_id, "data": data},
                      refusal_expected=True)
        except PandaRefused as exc:
            return Heartbeat(False, exc.message)
        return Heartbeat(True)

    def acquire_jobs(self, site_name: str, n_jobs: int, **fields: Any) -> list[dict]:
        body = {"site_name": site_name, "n_jobs": int(n_jobs), "harvester_id": self.harvester_id,
                **{k: v for k, v in fields.items() if v is not None}}
        try:
            data = self.call("POST", "pilot/acquire_jobs", body, retry_if=_connect_failure)
        except PandaRefused as exc:
            if NO_JOBS in exc.message:
                return []
            raise
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
            raise PandaError(f"PanDA pilot/acquire_jobs: unexpected data {str(data)[:200]!r}")
        return data["jobs"]

    def update_job(self, update: dict) -> dict:
        return self.call("POST", "pilot/update_job", update)

    def update_jobs_bulk(self, updates: list[dict]) -> list[JobUpdateOutcome]:
        """One outcome per update, same order."""
        data = self.call("POST", "pilot/update_jobs_bulk", {"job_list": updates, "harvester_id": self.harvester_id})
        if not isinstance(data, list) or len(data) != len(updates):
            raise PandaError(f"PanDA pilot/update_jobs_bulk: expected {len(updates)} answers, got {str(data)[:200]!r}")
        return [_job_outcome(update, answer) for update, answer in zip(updates, data)]

    def get_job_status(self, job_ids: list[int]) -> list[dict]:
        return self.call("GET", "pilot/get_job_status", params={"job_ids": [int(i) for i in job_ids]})

    def job_states(self, job_ids: list[int]) -> dict[int, JobState]:
        """Each job's status and attempt number at PanDA, by PandaID; an id missing from the answer is absent."""
        data = self.get_job_status(job_ids)
        if not isinstance(data, list):
            raise PandaError(f"PanDA pilot/get_job_status: unexpected data {str(data)[:200]!r}")
        out = {}
        for entry in data:
            if not isinstance(entry, dict) or not isinstance(entry.get("job_id"), int):
                continue
            attempt = entry.get("attempt_number")
            out[entry["job_id"]] = JobState(entry["job_id"], str(entry.get("status")),
                                            attempt if isinstance(attempt, int) else None)
        return out

    def update_workers(self, workers: list[dict]) -> list[WorkerUpdateOutcome]:
        """One outcome per worker dict, same order."""
        data = self.call("POST", "harvester/update_workers", {"harvester_id": self.harvester_id, "workers": workers})
        if not isinstance(data, list) or len(data) != len(workers):
            raise PandaError(f"PanDA harvester/update_workers: expected {len(workers)} answers, got {str(data)[:200]!r}")
        return [WorkerUpdateOutcome(worker.get("workerID"), bool(ok)) for worker, ok in zip(workers, data)]

    def report_worker_statistics(self, queue: str, statistics: dict) -> None:
        self.call("POST", "harvester/report_worker_statistics", {
            "harvester_id": self.harvester_id, "panda_queue": queue, "statistics": json.dumps(statistics)})

    def update_service_metrics(self, entries: list[list]) -> None:
        """[[creation time "%Y-%m-%d %H:%M:%S.%f", host, metrics JSON text], ...] for PanDA's monitor."""
        self.call("POST", "harvester/update_service_metrics", {"harvester_id": self.harvester_id, "metrics": entries})

    def acquire_commands(self, n_commands: int = 100) -> list[panda_commands.PandaCommand]:
        # PanDA marks returned commands retrieved: a retry after the request was sent would lose them.
        return panda_commands.parse(self.call("POST", "harvester/acquire_commands",
                                              {"harvester_id": self.harvester_id, "n_commands": int(n_commands)},
                                              retry_if=_connect_failure))

    def acknowledge_commands(self, command_ids: list[int]) -> None:
        if not command_ids:  # PanDA answers success:false to an empty list
            return
        self.call("POST", "harvester/acknowledge_commands", {"command_ids": [int(i) for i in command_ids]})

    def get_current_worker_id(self) -> int:
        # A harvester id PanDA has no worker of yet answers a database error (MAX() of no rows).
        data = self.call("GET", "harvester/get_current_worker_id", params={"harvester_id": self.harvester_id},
                         refusal_expected=True)
        return int(data) if data is not None else 0

    def get_resource_types(self) -> list[dict]:
        return self.call("GET", "metaconfig/get_resource_types") or []

    def active_job_stats_by_site(self) -> dict:
        return self.call("GET", "statistics/active_job_stats_by_site") or {}

    def active_job_detailed_stats_by_site(self) -> dict:
        """{site: {resource_type: {prodSourceLabel: {status: n}}}} (panda-server 0.7.0 and newer)."""
        return self.call("GET", "statistics/active_job_detailed_stats_by_site") or {}

    def kill_jobs(self, job_ids: list[int]) -> Any:
        return self.call("POST", "job/kill", {"job_ids": [int(i) for i in job_ids]})


def _short(exc: BaseException) -> str:
    """A network error in one line, without the URL's query or nested reprs."""
    text = str(exc)
    for marker in ("Caused by ", "(Caused by"):
        if marker in text:
            text = text.split(marker, 1)[1].strip("() ")
    return f"{type(exc).__name__}: {text[:240]}"
