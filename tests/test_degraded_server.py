"""A real gunicorn whose database, cache and broker are unreachable answers with 503s, not "Server Error (500)",
and a database connection killed under a running gunicorn costs no request (CONN_HEALTH_CHECKS).

Unreachable means real: URLs on local ports where nothing listens, so every connection is refused by the kernel.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from django.db import connection

from tests.conftest import database_url

pytestmark = [pytest.mark.server, pytest.mark.django_db]

REPO = Path(__file__).resolve().parent.parent
APPLICATION_NAME = f"prefloop-degraded-test-{os.getpid()}"


def free_port() -> int:
    """A local port nothing listens on: bound by the kernel's choice, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - a loopback http URL of ours
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@contextmanager
def gunicorn(log: IO[bytes], **env: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "prefloop.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"]
    command += ["-k", "gthread", "--threads", "1"]
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"gunicorn exited with {server.returncode}:\n{Path(log.name).read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("gunicorn did not start")
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    with open(tmp_path / "gunicorn.log", "wb") as log:
        yield log


def test_with_the_database_cache_and_broker_unreachable_users_get_503s_and_readiness_names_each(
    server_log: IO[bytes],
) -> None:
    dead = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/prefloop",
        "CACHE_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    with gunicorn(server_log, **dead) as base:
        # Liveness: the process answers, whatever its dependencies do.
        assert get(f"{base}/healthz")[::2] == (200, "ok")

        started = time.monotonic()
        status, _, body = get(f"{base}/readyz")
        assert time.monotonic() - started < 10
        assert status == 503
        readiness = json.loads(body)
        assert readiness["status"] == "unavailable"
        assert {name: (check["ok"], check["error"]) for name, check in readiness["checks"].items()} == {
            "database": (False, "OperationalError"),
            "broker": (False, "OperationalError"),
            "cache": (False, "ConnectionError"),
        }

        # A signed-in annotator's page: the session cannot be read from the cache nor the database.
        status, headers, html = get(f"{base}/rate/", Cookie="sessionid=0123456789abcdefghijklmnopqrstuv")
        assert status == 503 and headers["Retry-After"] == "30"
        assert "<h1>Temporarily unavailable</h1>" in html and 'href="/static/prefloop.css"' in html
        assert "Server Error" not in html

        # The API with a token: the token cannot be looked up.
        status, headers, body = get(f"{base}/api/campaigns/", Authorization="Token 0123456789abcdef")
        assert status == 503 and headers["Content-Type"] == "application/json"
        assert "temporarily unavailable" in body

        # The login page needs none of them and still renders.
        assert get(f"{base}/accounts/login/")[0] == 200


def _gunicorn_connections() -> int:
    with connection.cursor() as cursor:
        # The statistics views keep one snapshot per transaction, and the test runs in one.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME])
        return cursor.fetchone()[0]


def test_a_database_connection_killed_under_a_running_server_costs_no_request(server_log: IO[bytes]) -> None:
    url = f"{database_url(connection.settings_dict)}?application_name={APPLICATION_NAME}"
    with gunicorn(server_log, DATABASE_URL=url, DATABASE_CONN_MAX_AGE="600") as base:
        assert get(f"{base}/readyz")[0] == 200
        assert _gunicorn_connections() == 1  # kept open between requests (CONN_MAX_AGE)

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                [APPLICATION_NAME],
            )
            assert cursor.fetchone()[0] == 1
        deadline = time.monotonic() + 10
        while _gunicorn_connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gunicorn_connections() == 0

        # The next request finds its kept connection dead before using it, and opens another.
        status, _, body = get(f"{base}/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"]["database"]["ok"] is True
        assert _gunicorn_connections() == 1
