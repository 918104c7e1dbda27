"""The multi-node Slurm cluster (tests/support/slurm_nodes.py), started once per session."""

from tests.support.slurm_nodes import slurm_nodes  # noqa: F401  (the fixture)
