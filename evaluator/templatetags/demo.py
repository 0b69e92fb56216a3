"""`{% demo_preparation_notice %}`: a line linking to the demo's progress page while `make demo` still prepares
it; nothing otherwise. For the pages a role lands on, whose views know nothing of the demo."""

from typing import Any

from django import template

from evaluator.selectors.demo import demo_preparation_pending

register = template.Library()


@register.inclusion_tag("demo/_notice.html")
def demo_preparation_notice() -> dict[str, Any]:
    return {"pending": demo_preparation_pending()}
