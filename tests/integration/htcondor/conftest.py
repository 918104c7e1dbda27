"""The HTCondor peer: the real pool (tests/support/condor_pool.py), with the test PKI its pilots accept."""

from tests.support.condor_pool import condor_pool, htc, pki  # noqa: F401  (fixtures; pki overrides the root's)
