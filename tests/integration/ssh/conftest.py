"""The login-node peer: sshd on login nodes in network namespaces, the real Slurm behind them
(tests/support/login_nodes.py)."""

from tests.support.login_nodes import login, login_site  # noqa: F401  (fixtures)
