"""What the monitoring keeps in the state database: worker count snapshots (taken by poll, trimmed by
sweep), the commands running now and each command's last run (and last failure) per host, and counters
that outlive a process. Reads are in `views`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from harvester_cli import model
from harvester_cli.state import claims
from harvester_cli.state.schema import (
    HISTORY_STATES,
    command_runs,
    history_series,
    login_nodes,
    metric_counters,
    running_commands,
    status_history,
    workers,
)
from harvester_cli.state.store import Store, Tx


def series_ids(tx: Tx, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """The series id of each (queue, CE, resource type), made on first sight."""
    wanted = set(keys)
    if not wanted:
        return {}
    queues = {k[0] for k in wanted}
    found = {(q, ce, rt): i for i, q, ce, rt in tx.execute(
        select(history_series.c.series_id, history_series.c.queue, history_series.c.computing_element,
               history_series.c.resource_type).where(history_series.c.queue.in_(queues)))}
    for key in sorted(wanted - set(found)):
        try:
            with tx.conn.begin_nested():   # another host may add the same series at this moment
                tx.execute(history_series.insert().values(queue=key[0], computing_element=key[1],
                                                            resource_type=key[2]))
        except IntegrityError:
            pass
        found[key] = tx.execute(select(history_series.c.series_id).where(
            history_series.c.queue == key[0], history_series.c.computing_element == key[1],
            history_series.c.resource_type == key[2])).scalar_one()
    return {k: found[k] for k in wanted}


def record_snapshot(store: Store, queues: list[str], at: float | None = None) -> int:
    """Workers per (queue, CE, resource type) and state, as one snapshot at `at`; returns rows written.
    A queue without workers gets one all-zero row, so its chart drops to zero instead of ending."""
    taken = int(model.now() if at is None else at)
    if not queues:
        return 0
    # Run again whole if another host's transaction deadlocked it (hosts poll at the same second), or after a
    # COMMIT whose answer never came (a snapshot of the same second replaces itself).
    return store.retrying(lambda tx: _snapshot(tx, queues, taken), rerun_unknown=True)


def _snapshot(tx: Tx, queues: list[str], taken: int) -> int:
    counts: dict[tuple[str, str, str], dict[str, int]] = {}
    # grouped in the order of ix_workers_queue_status_shape: counted from the index, no sort
    for queue, status, ce, rt, n in tx.execute(
            select(workers.c.queue, workers.c.status, workers.c.computing_element, workers.c.resource_type,
                   func.count()).where(workers.c.queue.in_(queues))
            .group_by(workers.c.queue, workers.c.status, workers.c.computing_element, workers.c.resource_type)):
        if status in HISTORY_STATES:
            counts.setdefault((queue, ce or "", rt or ""), {})[status] = n
    for queue in set(queues) - {k[0] for k in counts}:
        counts[(queue, "", "")] = {}
    ids = series_ids(tx, counts)
    # Two polls of one queue within the same second: the later snapshot replaces the earlier one. Only
    # rows that exist are deleted, by key: a delete that finds nothing still takes gap locks on MariaDB,
    # and two hosts' polls then deadlock on each other's inserts.
    there = list(tx.scalars(select(status_history.c.series_id).where(
        status_history.c.taken == taken, status_history.c.series_id.in_(list(ids.values())))))
    if there:
        tx.execute(delete(status_history).where(status_history.c.taken == taken,
                                                  status_history.c.series_id.in_(there)))
    rows = [{"taken": taken, "series_id": ids[key], **{s: by_state.get(s, 0) for s in HISTORY_STATES}}
            for key, by_state in counts.items()]
    try:
        with tx.conn.begin_nested():
            tx.execute(status_history.insert(), rows)
    except IntegrityError:   # another host took this second's snapshot meanwhile: as good as ours
        pass
    return len(counts)


def trim_history(store: Store, before: float) -> int:
    """Forget snapshots older than `before`; returns rows deleted."""
    with store.transaction() as tx:
        # Nothing to forget (most runs): no range delete, which would lock the gap before the oldest row.
        oldest = tx.scalar(select(func.min(status_history.c.taken)))
        if oldest is None or oldest >= int(before):
            return 0
        return tx.execute(delete(status_history).where(status_history.c.taken < int(before))).rowcount


def start_run(store: Store, command: str, host: str, pid: int, started: float) -> int:
    """A command starts on this host: one row until it ends (record_run), which `status` shows as running.
    Returns the run's id. One statement: the command's previous start here comes along (its interval)."""
    previous = select(command_runs.c.last_start).where(command_runs.c.command == command,
                                                       command_runs.c.host == host).scalar_subquery()
    with store.transaction() as tx:
        return tx.execute(running_commands.insert().values(command=command, host=host, pid=pid, started=started,
                                                           previous_start=previous)).inserted_primary_key[0]


def record_run(store: Store, command: str, host: str, started: float, ended: float, exit_code: int,
               items: int | None, *, failure: str | None = None, run_id: int | None = None) -> None:
    """One run of a command on this host: its last start, end, exit code and items, and the totals; a failed
    run (exit code not 0) also as the last failure, with the first line of why. The run no longer runs
    (`run_id`), and neither do the runs of this host whose process is gone (killed outright, a reboot)."""
    ok = exit_code == 0
    values = {"last_start": started, "last_end": ended, "last_exit": exit_code, "last_items": items}
    if not ok:
        values.update(last_failure_at=ended, last_failure_exit=exit_code, last_failure=_first_line(failure))
    with store.transaction() as tx:
        _forget_runs(tx, host, run_id)
        changed = tx.execute(update(command_runs).where(command_runs.c.command == command,
                                                          command_runs.c.host == host).values(
            **values, runs=command_runs.c.runs + 1, failed_runs=command_runs.c.failed_runs + (0 if ok else 1),
            items=command_runs.c["items"] + (items or 0), **({"last_success": ended} if ok else {}))).rowcount
        if changed:
            return
        try:
            with tx.conn.begin_nested():
                tx.execute(command_runs.insert().values(
                    command=command, host=host, **values, last_success=ended if ok else None, runs=1,
                    failed_runs=0 if ok else 1, items=items or 0))
        except IntegrityError:   # the same command ended on this host at this moment: count it next time
            pass


def record_login_nodes(store: Store, host: str, contacts: list[tuple[str, str, bool, str | None, float]]) -> None:
    """What this run learnt of each queue's login nodes, from this host: (queue, node, answered, why not, when),
    in the order tried. A node that answered has its problem cleared; one that did not keeps when it last did."""
    latest: dict[tuple[str, str], tuple[bool, str | None, float]] = {}
    for queue, node, answered, problem, at in contacts:
        latest[(queue, node)] = (answered, problem, at)
    if not latest:
        return
    with store.transaction() as tx:
        for (queue, node), (answered, problem, at) in sorted(latest.items()):
            values = {"tried": at, "problem": None if answered else (problem or "did not answer")[:1000],
                      **({"answered": at} if answered else {})}
            where = (login_nodes.c.queue == queue, login_nodes.c.host == host, login_nodes.c.node == node)
            if tx.execute(update(login_nodes).where(*where).values(**values)).rowcount:
                continue
            try:
                with tx.conn.begin_nested():
                    tx.execute(login_nodes.insert().values(queue=queue, host=host, node=node, **values))
            except IntegrityError:   # a run of this host wrote the same node at this moment: its row stands
                pass


def process_gone(pid: int, started: float, host: str) -> bool:
    """Whether the process of a run that started at `started` on this host (`host`) no longer exists: no such
    pid, or the pid now belongs to a process started after the run did (the pid was reused)."""
    if claims.owner_is_dead(f"{host}:{pid}", host):
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):   # no /proc (or not this host's process): alive
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > started + 2


def _first_line(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    return text.strip().splitlines()[0][:1000]


def _forget_runs(tx: Tx, host: str, run_id: int | None) -> None:
    """This run's row, and those of this host's runs whose process no longer exists."""
    gone = [] if run_id is None else [run_id]
    for other, pid, started in tx.execute(select(running_commands.c.run_id, running_commands.c.pid,
                                                 running_commands.c.started).where(running_commands.c.host == host)):
        if other != run_id and process_gone(pid, started, host):
            gone.append(other)
    if gone:
        tx.execute(delete(running_commands).where(running_commands.c.run_id.in_(gone)))


def counter_key(labels: Mapping[str, str]) -> str:
    return json.dumps({k: str(v) for k, v in sorted(labels.items())}, separators=(",", ":"))[:255]


def add_counters(store: Store, host: str, increments: Mapping[tuple[str, str], float]) -> None:
    """Add {(counter name, counter_key(labels)): amount} to this host's counters."""
    increments = {k: v for k, v in increments.items() if v}
    if not increments:
        return
    with store.transaction() as tx:
        for (name, labels), amount in sorted(increments.items()):
            changed = tx.execute(update(metric_counters).where(
                metric_counters.c.name == name, metric_counters.c.host == host, metric_counters.c.labels == labels)
                .values(value=metric_counters.c.value + amount)).rowcount
            if not changed:
                with tx.conn.begin_nested():
                    tx.execute(metric_counters.insert().values(name=name, host=host, labels=labels, value=amount))
