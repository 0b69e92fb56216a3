"""The workers page: every Celery worker that answers, what it runs, and the jobs held by one that went silent."""

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from evaluator.roles import ADMIN, AuthenticatedHttpRequest, role_required
from evaluator.selectors.workers import workers_overview


@require_GET
@role_required(ADMIN)
def workers(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The page; an HTMX poll (every 5 s) gets only the table. Each render waits up to 1 s for the workers' replies."""
    context = {"overview": workers_overview()}
    if request.htmx:
        return render(request, "manage/_workers.html", context)
    return render(request, "manage/workers.html", context)
