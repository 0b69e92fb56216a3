from collections.abc import Mapping
from typing import Any

from django import template
from django.utils.safestring import SafeString

from evaluator.models import any_unfinished
from evaluator.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return render_markdown(text or "")


@register.filter
def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


@register.filter
def pvalue(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


@register.filter
def get_item(mapping: Mapping[str, Any], key: str) -> Any:
    """mapping[key] for keys a template cannot spell (TRL's "rewards/chosen"); None when absent."""
    return mapping.get(key) if isinstance(mapping, Mapping) else None


register.filter("any_pending", any_unfinished)
