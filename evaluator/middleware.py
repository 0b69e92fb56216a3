"""ServiceUnavailableMiddleware: a view that cannot reach the database, the cache or the broker answers with the
503 page and a Retry-After instead of "Server Error (500)" (docs/deployment.md)."""

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from evaluator.views.errors import is_unavailable, unavailable_response

logger = logging.getLogger(__name__)


class ServiceUnavailableMiddleware:
    """Turns the view's unavailability errors into 503s. Errors raised outside the view, by other middleware,
    reach handler500 (evaluator.views.errors.server_error), which answers the same way."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_unavailable(exception):
            return None
        logger.warning("%s %s: a service is unavailable", request.method, request.path, exc_info=exception)
        return unavailable_response(request)
