"""A Redis cache (sessions, progress counts, API throttles) that cannot be reached: a styled 503 page with a
Retry-After instead of "Server Error (500)"; `/readyz` names what is down while `/healthz` stays a liveness check.

The dead service is real: a Redis URL on a local port where nothing listens, so every call is refused by the
kernel. A dead database and a dead broker are exercised against real gunicorn processes in
tests/test_degraded_server.py.
"""

import socket
from collections.abc import Callable

import pytest
from django.core.cache import caches
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token

from evaluator.views.errors import server_error

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    """A local port nothing listens on: bound by the kernel's choice, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dead_cache(settings) -> Callable[[], str]:
    """Points the cache, and the sessions read through it, at a Redis on a closed port; returns its URL. Called
    once the test has logged in, as a session already held when the cache goes down."""

    def take_down() -> str:
        url = f"redis://127.0.0.1:{closed_port()}/0"
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
            }
        }
        settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
        return url

    return take_down


def assert_the_unavailable_page(response) -> None:
    html = response.content.decode()
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "<h1>Temporarily unavailable</h1>" in html and "try again in about 30 seconds" in html
    # The app's own look: base.html's stylesheet and top bar, signed out (nothing read from the session).
    assert '<link rel="stylesheet" href="/static/prefloop.css">' in html
    assert '<a class="brand" href="/">Prefloop</a>' in html and "Log out" not in html
    assert "Server Error" not in html
    assert "Content-Security-Policy" in response.headers


def assert_the_unavailable_page_body(response) -> None:
    # The handler's response has not been through the middleware (no CSP header yet); the body is the page.
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert "<h1>Temporarily unavailable</h1>" in response.content.decode()


def test_the_rating_page_answers_with_the_styled_503_page_when_the_session_cache_is_down(
    client, annotator, dead_cache
) -> None:
    client.force_login(annotator)
    dead_cache()
    response = client.get(reverse("rate"))
    assert_the_unavailable_page(response)


def test_an_htmx_rating_action_is_told_to_reload_the_page_rather_than_silently_do_nothing(
    client, annotator, dead_cache
) -> None:
    client.force_login(annotator)
    dead_cache()
    response = client.get(reverse("rate"), headers={"HX-Request": "true"})
    assert response.status_code == 503
    assert response["HX-Refresh"] == "true"


def test_the_api_answers_with_a_json_503_when_its_throttle_cache_is_down(client, researcher, dead_cache) -> None:
    token = Token.objects.create(user=researcher)
    dead_cache()
    response = client.get(reverse("api_campaigns"), headers={"Authorization": f"Token {token.key}"})
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json() == {"detail": "Prefloop is temporarily unavailable. Please try again in a moment."}


def test_the_liveness_check_still_answers_ok_when_the_cache_is_down(client, dead_cache) -> None:
    dead_cache()
    response = client.get(reverse("healthz"))
    assert (response.status_code, response.content) == (200, b"ok")


def test_an_unavailability_error_raised_outside_any_view_reaches_handler500_and_becomes_the_503_page(
    dead_cache,
) -> None:
    dead_cache()
    request = RequestFactory().get("/rate/")
    try:
        caches["default"].set("key", "value")  # refused by the closed port: redis' own ConnectionError
    except Exception:
        response = server_error(request)
    else:
        pytest.fail("the cache on a closed port answered")
    assert_the_unavailable_page_body(response)


def test_any_other_unhandled_error_gets_the_styled_500_page() -> None:
    request = RequestFactory().get("/rate/")
    try:
        {}["missing"]
    except KeyError:
        response = server_error(request)
    html = response.content.decode()
    assert response.status_code == 500
    assert "<h1>Something went wrong</h1>" in html and "/static/prefloop.css" in html
    assert "Retry-After" not in response.headers


def test_readiness_is_200_with_every_check_named_when_everything_answers(client) -> None:
    response = client.get(reverse("readyz"))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "cache"}
    for check in body["checks"].values():
        assert check["ok"] is True and check["error"] is None
        assert 0 <= check["latency_ms"] < 2000
    assert "no-cache" in response["Cache-Control"]


def test_readiness_is_503_naming_the_cache_when_the_cache_is_down(client, dead_cache) -> None:
    url = dead_cache()
    response = client.get(reverse("readyz"))
    checks = response.json()["checks"]
    assert response.status_code == 503 and response.json()["status"] == "unavailable"
    assert checks["cache"]["ok"] is False and checks["cache"]["error"] == "ConnectionError"
    assert checks["database"]["ok"] is True and checks["broker"]["ok"] is True
    # The public answer names the failure's kind, never its message (hosts, ports, users).
    assert url.split("//")[1] not in response.content.decode()
