"""Who holds a job, as the job pages and the workers page show it: `{% job_holder job %}`, `{% heartbeat_age job %}`
and `|duration`."""

from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from evaluator.models import JobStatus
from evaluator.services.jobs import stale_after

register = template.Library()


@register.filter
def duration(seconds: float | int | None) -> str:
    """`75` → "1 min 15 s", `7260` → "2 h 1 min": seconds matter for a heartbeat, not for an uptime of hours."""
    if seconds is None:
        return "–"
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24} d {hours % 24} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _age(at: datetime | None) -> float | None:
    return None if at is None else (timezone.now() - at).total_seconds()


@register.simple_tag
def heartbeat_age(job: Any) -> SafeString:
    """How long ago the job's holder last gave a sign of life; said as an error once it counts as lost."""
    age = _age(job.heartbeat_at)
    if age is None:
        return format_html('<span class="error">no heartbeat yet</span>')
    if age > stale_after().total_seconds():
        return format_html('<span class="error">{} ago — silent</span>', duration(age))
    return format_html("{} ago", duration(age))


@register.inclusion_tag("manage/_job_holder.html")
def job_holder(job: Any) -> dict[str, Any]:
    """The worker process holding a running job, with its heartbeat age and whether it has gone silent (no
    heartbeat for PREFLOOP_JOB_STALE_SECONDS); for an ended job, the process that ran it last."""
    age = _age(job.heartbeat_at)
    running = job.status == JobStatus.RUNNING
    return {
        "job": job,
        "running": running,
        "age": duration(age) if age is not None else None,
        "silent": running and (age is None or age > stale_after().total_seconds()),
    }
