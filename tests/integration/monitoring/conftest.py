"""The monitoring peers (Prometheus with node_exporter, Chromium) read one scenario: tests/support/monitoring.py."""

from tests.support.monitoring import serve_logs, site  # noqa: F401  (fixtures)
