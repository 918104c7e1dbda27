"""The Slurm peer: real Slurm daemons (tests/support/slurm_cluster.py)."""

from tests.support.slurm_cluster import cluster, slurm  # noqa: F401  (fixtures)
