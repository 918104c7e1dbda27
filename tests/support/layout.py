"""A pytest plugin for tests/unit/test_layout.py: with `-p tests.support.layout` and $TESTS_LAYOUT_OUT set,
a collection writes one JSON line per test: its node id, its markers and the modules that define the
fixtures it uses."""

from __future__ import annotations

import json
import os

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    out = os.environ.get("TESTS_LAYOUT_OUT")
    if not out:
        return
    with open(out, "w") as f:
        for item in items:
            info = getattr(item, "_fixtureinfo", None)
            defs = info.name2fixturedefs.values() if info else []
            modules = sorted({chain[-1].func.__module__ for chain in defs if chain})
            markers = sorted({mark.name for mark in item.iter_markers()})
            f.write(json.dumps({"nodeid": item.nodeid, "markers": markers, "fixture_modules": modules}) + "\n")
