import math
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
def p_phrase(value: float | None) -> str:
    """A p-value for a sentence: "p < 0.001", "p = 0.042"; "p: –" when there is none."""
    if value is None:
        return "p: –"
    return f"p {pvalue(value)}" if value < 0.001 else f"p = {pvalue(value)}"


@register.filter
def agreement_missing(rows: Any) -> bool:
    """Whether the agreement table shows "–" somewhere (or has no row): no comparison had two raters."""
    rows = list(rows or ())
    return not rows or any(
        not _finite(row.get("krippendorff_alpha")) or not _finite(row.get("fleiss_kappa")) for row in rows
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@register.filter(name="sorted")
def sorted_filter(values: Any) -> list[Any]:
    """The items in order, for sets a page lists (a user's roles)."""
    return sorted(values or ())


@register.filter
def get_item(mapping: Mapping[str, Any], key: str) -> Any:
    """mapping[key] for keys a template cannot spell (TRL's "rewards/chosen"); None when absent."""
    return mapping.get(key) if isinstance(mapping, Mapping) else None


register.filter("any_pending", any_unfinished)
