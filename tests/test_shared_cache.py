"""CACHE_URL: one Redis cache every process shares, sessions read from it and written through to the database."""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.backends.cached_db import KEY_PREFIX
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.urls import reverse

REPO = Path(__file__).resolve().parent.parent
SHOW_SETTINGS = (
    "import json; from prefloop import settings as s; "
    "print(json.dumps([s.CACHES['default']['BACKEND'], s.CACHES['default']['LOCATION'], s.SESSION_ENGINE]))"
)


def _settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True
    )


def _test_redis(db: int) -> str:
    """The test Redis server (the broker's), another database on it."""
    return urlunsplit(urlsplit(django_settings.CELERY_BROKER_URL)._replace(path=f"/{db}"))


def test_a_cache_url_selects_the_redis_cache_and_cached_sessions() -> None:
    url = _test_redis(14)
    result = _settings_with(CACHE_URL=url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "django.core.cache.backends.redis.RedisCache",
        url,
        "django.contrib.sessions.backends.cached_db",
    ]


def test_a_cache_url_that_is_not_redis_is_refused_by_name() -> None:
    result = _settings_with(CACHE_URL="memcached://127.0.0.1:11211")
    assert result.returncode != 0
    assert "CACHE_URL must be a redis://" in result.stderr and "memcached://127.0.0.1:11211" in result.stderr


@pytest.fixture
def shared_cache(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _test_redis(14)}
    }
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    cache.clear()
    yield cache
    cache.clear()


@pytest.mark.django_db
def test_a_session_is_read_from_the_shared_cache_and_a_logout_ends_it(shared_cache, client, annotator) -> None:
    annotator.set_password("a long enough password")
    annotator.save()
    signed_in = client.post(reverse("login"), {"username": annotator.username, "password": "a long enough password"})
    assert signed_in.status_code == 302
    key = client.cookies["sessionid"].value
    assert shared_cache.get(KEY_PREFIX + key) is not None
    # Written through: the row is there; served from Redis: the page still opens once the row is gone.
    assert Session.objects.filter(session_key=key).exists()
    Session.objects.filter(session_key=key).delete()
    assert client.get(reverse("rate")).status_code == 200

    client.post(reverse("logout"))
    assert shared_cache.get(KEY_PREFIX + key) is None
    client.cookies["sessionid"] = key  # the old cookie, replayed
    response = client.get(reverse("rate"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
