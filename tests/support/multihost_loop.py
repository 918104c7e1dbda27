"""One host's cron, for the multihost tests and bench: run harvester-cli commands until SIGTERM.

usage: multihost_loop.py CONFIG RUNS_JSONL STEPS SEED PAUSE
STEPS "cycle": `cycle` after `cycle`; "mixed": `cycle`, and now and then `poll`, `propagate` or `sweep`
on their own (hosts at different rhythms). Each run appends one JSON line: command, exit code, the
database use its --json reported, CPU seconds, wall seconds. SIGTERM lets the running command finish.
"""

import json
import random
import resource
import signal
import subprocess
import sys
import time

config, runs, steps, seed, pause = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
rng = random.Random(seed)
while not stopping:
    commands = [["cycle"]]
    if steps == "mixed":
        commands += [[name] for name in ("poll", "propagate", "sweep") if rng.random() < 0.4]
    for command in commands:
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
        # In this loop's process group: a kill -9 of the group takes the command with it (the test's stop
        # signals this process alone, and the command finishes).
        result = subprocess.run([sys.executable, "-m", "harvester_cli", "--config", config, "--json", *command],
                                capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            answer = {}
        record = {"command": command[0], "rc": result.returncode, "database": answer.get("database"),
                  "started": started, "wall": time.time() - started,
                  "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                  "answer": answer, "stderr": result.stderr[-2000:]}
        with open(runs, "a") as f:
            f.write(json.dumps(record) + "\n")
        if stopping:
            break
    time.sleep(pause * rng.uniform(0.5, 1.5))
