"""Untrusted text (prompts, model answers) → markdown → sanitized HTML."""

from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

# "js-default" is markdown-it's safe preset: raw HTML is escaped, dangerous link schemes are refused.
_markdown = MarkdownIt("js-default").enable("table")

_ALIGN_CLASSES = {f"align-{side}" for side in ("left", "center", "right")}


def _table_align_classes(state: StateCore) -> None:
    # markdown-it aligns table cells with style="text-align:…", which the CSP (style-src 'self') blocks.
    for token in state.tokens:
        if token.type in ("th_open", "td_open") and "style" in token.attrs:
            side = str(token.attrs.pop("style")).removeprefix("text-align:")
            token.attrSet("class", f"align-{side}")


_markdown.core.ruler.push("table_align_classes", _table_align_classes)

_ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "em",
    "strong",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
}
# No id/name (they could clobber page globals), no images (a remote image leaks that the page was viewed).
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}


def render_markdown(text: str) -> SafeString:
    return mark_safe(_sanitized_html(text))  # noqa: S308 - sanitized by nh3


# A pure function of the text, so its results are kept: a page's guidelines, and each answer its k annotators
# see, are rendered once per process (a 2.5 kB answer costs about 1.4 ms to render).
@lru_cache(maxsize=512)
def _sanitized_html(text: str) -> str:
    html = _markdown.render(text)
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        allowed_classes={"th": _ALIGN_CLASSES, "td": _ALIGN_CLASSES},
    )
