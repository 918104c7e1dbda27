"""One host's cron in a chaos run (bench/chaos.py): harvester-cli commands one after the other until SIGTERM.

usage: chaos_loop.py CONFIG HOST_DIR SEED PAUSE

Each round is, drawn from SEED, either `cycle` or the chain `fetch-jobs`, `submit`, `poll`, `propagate`,
`sweep` (a site's separate cron lines). While a command runs, HOST_DIR/current holds its pid and name: the
chaos run kills it (-9) from there. HOST_DIR/clock, when present, is taken (renamed) by the next command,
which then runs under libfaketime with the offset it names: a clock step that one command sees, not the
machine. Every run appends one JSON line to HOST_DIR/runs.jsonl (with the COMMITs
whose answer never came and the reconnects its --json reported); SIGTERM lets the running command finish.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

config, host_dir, seed, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
CHAIN = ["fetch-jobs", "submit", "poll", "propagate", "sweep"]
stopping = False


def stop(*_):
    global stopping
    stopping = True


def clock_step() -> dict | None:
    """The clock step waiting for the next command, taken so that no other command sees it."""
    path = os.path.join(host_dir, "clock")
    taken = path + ".taken"
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None
    with open(taken) as f:
        step = json.load(f)
    os.unlink(taken)
    return step


signal.signal(signal.SIGTERM, stop)
rng = random.Random(seed)
while not stopping:
    for command in (["cycle"] if rng.random() < 0.5 else CHAIN):
        env = dict(os.environ)
        step = clock_step()
        if step:
            # The monotonic clock stays true: only the wall clock (time(), gettimeofday) steps.
            env.update(LD_PRELOAD=FAKETIME, FAKETIME=step["offset"], FAKETIME_DONT_FAKE_MONOTONIC="1",
                       FAKETIME_NO_CACHE="1")
        started = time.time()
        # In this loop's process group; the chaos run kills the command alone, by its pid.
        process = subprocess.Popen([sys.executable, "-m", "harvester_cli", "--config", config, "--json", command],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        with open(os.path.join(host_dir, "current"), "w") as f:
            f.write(f"{process.pid} {command}\n")
        stdout, stderr = process.communicate()
        try:
            database = json.loads(stdout).get("database") or {}
        except (ValueError, AttributeError):
            database = {}
        os.unlink(os.path.join(host_dir, "current"))
        record = {"command": command, "rc": process.returncode, "started": started, "wall": time.time() - started,
                  "stderr": stderr[-2000:], "fault": step["fault"] if step else None,
                  "unknown_commits": database.get("unknown_commits", 0), "reconnects": database.get("reconnects", 0)}
        with open(os.path.join(host_dir, "runs.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        if stopping:
            break
    time.sleep(pause * rng.uniform(0.5, 1.5))
