"""Production settings: `check --deploy` is clean, security switches are set by the environment, and the OpenAPI
schema is for researchers and admins only."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

REPO = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "PREFLOOP_PRODUCTION": "1",
    "PREFLOOP_DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "prefloop.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://prefloop.example.org",
    "PREFLOOP_TRUSTED_PROXY_COUNT": "1",
}


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process (Playwright's sync API runs an event loop);
    # a deployment never has it, and check --deploy rightly refuses it.
    inherited = {name: value for name, value in os.environ.items() if name != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env={**inherited, **env}, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_under_production_settings() -> None:
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_when_a_production_switch_is_turned_off() -> None:
    # The check above would pass vacuously if --deploy checked nothing: the same run with HSTS off must warn.
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION, SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


def test_production_settings_come_from_the_environment() -> None:
    show = (
        "import json; from prefloop import settings as s; print(json.dumps([s.DEBUG, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_PRELOAD, "
        "s.DATABASES['default']['CONN_HEALTH_CHECKS'], s.PREFLOOP_TRUSTED_PROXY_COUNT, "
        "s.REST_FRAMEWORK['NUM_PROXIES']]))"
    )
    result = _run("-c", show, **PRODUCTION, SECURE_HSTS_SECONDS="600", SECURE_HSTS_PRELOAD="0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, True, True, True, 600, False, True, 1, 1]


def test_a_bad_trusted_proxy_count_is_refused_by_name() -> None:
    result = _run("-c", "import prefloop.settings", PREFLOOP_TRUSTED_PROXY_COUNT="one")
    assert result.returncode != 0 and "PREFLOOP_TRUSTED_PROXY_COUNT='one' is not an integer" in result.stderr


@pytest.mark.django_db
def test_the_openapi_schema_needs_the_researcher_role(client, annotator, researcher, admin_user) -> None:
    url = reverse("api_schema")
    assert client.get(url).status_code == 401
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    for user in (researcher, admin_user):
        token = Token.objects.create(user=user)
        response = client.get(url, headers={"Authorization": f"Token {token.key}"})
        assert response.status_code == 200
        assert b"/api/campaigns/" in response.content
