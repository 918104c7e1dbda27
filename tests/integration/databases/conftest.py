"""The database peers: real PostgreSQL and MariaDB servers (tests/support/databases.py, a plugin of the
root conftest). `server_url` runs a test once on each, marked `postgres` or `mariadb`."""

import pytest

SERVERS = [pytest.param("pg_url", marks=pytest.mark.postgres, id="postgresql"),
           pytest.param("maria_url", marks=pytest.mark.mariadb, id="mariadb")]


@pytest.fixture(params=SERVERS)
def server_url(request) -> str:
    """An empty database on the server, as a SQLAlchemy URL."""
    return request.getfixturevalue(request.param)
