"""Readiness for load balancers and orchestrators: `/readyz` (liveness, `/healthz`, is in views/rating.py)."""

from dataclasses import asdict

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from evaluator.health import readiness


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the Celery broker and the cache all answer, 503 otherwise; the body names each
    check's state and latency. Reads neither the session nor the user."""
    results = readiness()
    ready = all(result.ok for result in results)
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {result.name: {k: v for k, v in asdict(result).items() if k != "name"} for result in results},
    }
    return JsonResponse(body, status=200 if ready else 503)
