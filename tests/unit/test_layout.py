"""Where a test goes says what it needs (tests/conftest.py); this checks the tree keeps that promise:

- no test module imports another test module (shared helpers live in tests/support);
- every test under tests/integration carries the `integration` marker and none under tests/unit does, so
  `pytest tests/unit` and `pytest -m "not integration"` run the same tests;
- no test under tests/unit carries a peer's marker or uses a fixture of a peer (a real daemon or root).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from tests.support import ROOT

TESTS = ROOT / "tests"
PEER_MARKERS = {"htcondor", "arc", "slurm", "postgres", "mariadb", "voms", "tokens", "metrics", "browser", "multihost",
                "ssh", "failover", "manyjobs"}
# The support modules whose fixtures start a real daemon (or, for mail, the SMTP server tests count as a peer).
PEER_MODULES = {"tests.support.arc_ce", "tests.support.condor_pool", "tests.support.databases", "tests.support.mail",
                "tests.support.monitoring", "tests.support.slurm_cluster", "tests.support.slurm_nodes"}


def test_no_test_module_imports_another_test_module():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if name.split(".")[0] == "tests" and (last.startswith("test_") or last == "conftest"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, "import from tests/support instead:\n" + "\n".join(offenders)


def collected(tmp_path) -> list[dict]:
    out = tmp_path / "layout.jsonl"
    env = {**os.environ, "TESTS_LAYOUT_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-p", "tests.support.layout", str(TESTS)], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_directory_says_what_a_test_needs(tmp_path):
    tests = collected(tmp_path)
    unit = [t for t in tests if t["nodeid"].startswith("tests/unit/")]
    assert unit and len(unit) < len(tests)
    for test in tests:   # -m "not integration" is exactly tests/unit
        assert ("integration" in test["markers"]) != test["nodeid"].startswith("tests/unit/"), test["nodeid"]
    problems = [f"{t['nodeid']}: markers {sorted(PEER_MARKERS & set(t['markers']))}, fixtures from "
                f"{sorted(PEER_MODULES & set(t['fixture_modules']))}" for t in unit
                if PEER_MARKERS & set(t["markers"]) or PEER_MODULES & set(t["fixture_modules"])]
    assert not problems, "these need a peer: move them under tests/integration/<peer>/\n" + "\n".join(problems)
