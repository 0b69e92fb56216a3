"""Links that change one filter of the statistics page and keep the others."""

from django import template
from django.http import QueryDict

register = template.Library()


@register.simple_tag
def query_with(query: QueryDict, name: str, value: str) -> str:
    """The query string with `name` set to `value` (replacing any earlier value), URL-encoded."""
    changed = query.copy()
    changed[name] = value
    return changed.urlencode()


@register.simple_tag
def query_without(query: QueryDict, name: str) -> str:
    """The query string without `name`, URL-encoded."""
    changed = query.copy()
    changed.pop(name, None)
    return changed.urlencode()
