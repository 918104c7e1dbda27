"""The ARC peer: a real A-REX (tests/support/arc_ce.py)."""

from tests.support.arc_ce import arc_ce, pilot_zip  # noqa: F401  (fixtures)
