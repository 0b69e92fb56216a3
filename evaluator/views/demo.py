"""The demo's progress page: what `make demo` is still preparing (model, index, SFT adapter, answers), for anyone
signed in; an HTMX poll gets only the panel, and 286 (stop polling) once nothing will change any more."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from evaluator.roles import AuthenticatedHttpRequest
from evaluator.selectors.demo import demo_progress


@require_GET
@login_required
def demo_preparation(request: AuthenticatedHttpRequest) -> HttpResponse:
    progress = demo_progress()
    context = {"progress": progress}
    if request.htmx:
        done = progress is None or progress.finished
        return render(request, "demo/_progress.html", context, status=286 if done else 200)
    return render(request, "demo/progress.html", context)
