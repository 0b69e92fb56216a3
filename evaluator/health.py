"""Readiness probes: can this web process reach its database, its Celery broker and its cache right now?

`/healthz` says only that the process answers (liveness); `/readyz` runs these (docs/deployment.md). Each probe
is one cheap round trip with a short timeout, so a load balancer may call it every few seconds.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connections

from workers.celery import app as celery_app

logger = logging.getLogger(__name__)

READINESS_CACHE_KEY = "prefloop:readyz"


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    latency_ms: float
    # The exception's class only: the readiness answer is public, and a message may name hosts or users.
    error: str | None = None


def database_probe() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def broker_probe() -> None:
    timeout = settings.PREFLOOP_READINESS_TIMEOUT_SECONDS
    with celery_app.connection_for_write(connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


def cache_probe() -> None:
    # A write, not a read: a Redis out of memory or turned read-only still answers reads but fails every session
    # save.
    cache.set(READINESS_CACHE_KEY, 1, timeout=10)


PROBES: dict[str, Callable[[], None]] = {"database": database_probe, "broker": broker_probe, "cache": cache_probe}


def probe_run(name: str, probe: Callable[[], None]) -> ProbeResult:
    started = time.perf_counter()
    try:
        probe()
    except Exception as error:  # any failure means "not ready"; it is logged and named
        logger.warning("readiness: %s unavailable", name, exc_info=True)
        return ProbeResult(name, False, _elapsed_ms(started), type(error).__name__)
    return ProbeResult(name, True, _elapsed_ms(started))


def readiness() -> list[ProbeResult]:
    """Every probe, in order, each run whatever the others gave."""
    return [probe_run(name, probe) for name, probe in PROBES.items()]


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
