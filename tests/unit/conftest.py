"""Fixtures of the unit tests beyond the root conftest's simulator and harness: a grid CA, a site with
proxy and token profiles, a token endpoint and a token issuer of our own (tests/support/credentials.py).
Nothing here starts a daemon or needs root; the peers' fixtures are imported by the conftest.py of
tests/integration/<peer>/ only (tests/unit/test_layout.py checks that no unit test uses one)."""

from tests.support.credentials import ca, issuer, site, token_endpoint  # noqa: F401  (fixtures)
