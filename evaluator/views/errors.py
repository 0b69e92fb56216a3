"""Error pages: 503 when the database, the cache or the broker cannot be reached, 500 for anything else.

Both render without the request's context: no context processor runs, so the page reads neither the session
nor the user nor the database, which may be the very thing that is down.
"""

import logging
import sys

import kombu.exceptions
import redis.exceptions
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

logger = logging.getLogger(__name__)

# What a dependency that is down or unreachable raises: the database (a refused or dropped connection), the Redis
# cache and session store (refused, timed out), and the Celery broker when a view enqueues a job.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)

UNAVAILABLE_MESSAGE = "Prefloop is temporarily unavailable. Please try again in a moment."
# Used when even the error template cannot be rendered (a static files manifest that is missing, say).
_FALLBACK_PAGE = "<!doctype html><title>{title} · Prefloop</title><h1>{title}</h1><p>{text}</p>"


def is_unavailable(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says a service the app depends on is unreachable."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, UNAVAILABLE_ERRORS):
            return True
        seen = seen.__cause__
    return False


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: JSON for the API, the styled page for everyone else. An HTMX request is told to
    reload its page, since HTMX swaps no error response into the page and the click would seem to do nothing."""
    retry_after: int = settings.PREFLOOP_RETRY_AFTER_SECONDS
    response: HttpResponse
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"detail": UNAVAILABLE_MESSAGE}, status=503)
    else:
        response = _page("503.html", "Temporarily unavailable", status=503, retry_after=retry_after)
        if request.headers.get("HX-Request") == "true":
            response["HX-Refresh"] = "true"
    response["Retry-After"] = str(retry_after)
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django calls it for any exception no view or middleware handled, including those raised by
    middleware (a session saved on the way out), which ServiceUnavailableMiddleware never sees."""
    error = sys.exc_info()[1]
    if error is not None and is_unavailable(error):
        return unavailable_response(request)
    return _page("500.html", "Server error", status=500)


def _page(template: str, title: str, *, status: int, **context: object) -> HttpResponse:
    html: str
    try:
        html = loader.render_to_string(template, context)
    except Exception:
        logger.exception("the %s page could not be rendered", template)
        html = _FALLBACK_PAGE.format(title=title, text=UNAVAILABLE_MESSAGE if status == 503 else "Server error.")
    return HttpResponse(html, status=status)
