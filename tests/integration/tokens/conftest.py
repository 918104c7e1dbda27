"""The token peers: a real A-REX that admits tokens and the HTCondor pool's schedd with SCITOKENS
(tests/support/arc_ce.py, tests/support/condor_pool.py); the token issuer is started in the tests' module."""

from tests.support.arc_ce import pilot_zip  # noqa: F401  (fixtures)
from tests.support.condor_pool import condor_pool, htc, pki  # noqa: F401  (fixtures; pki overrides the root's)
