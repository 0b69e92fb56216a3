"""render_markdown: untrusted markdown in, sanitized HTML out; readable structure survives."""

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from evaluator.rendering import render_markdown
from tests.xss_corpus import RICH_MARKDOWN, XSS_CORPUS

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a",
}  # fmt: skip


class _Elements(HTMLParser):
    """The real elements of an HTML fragment with their attributes (escaped text is text, not tags)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


@pytest.mark.parametrize("text", XSS_CORPUS)
def test_it_renders_hostile_input_without_anything_that_runs_or_loads(text: str) -> None:
    html = str(render_markdown(text))
    for tag, attrs in _Elements(html).elements:
        assert tag in ALLOWED_TAGS, (text, html)
        assert set(attrs) <= {"href", "title", "rel", "class", "start"}, (text, html)  # no on*, id, name, src, style
        href = attrs.get("href")
        if href is not None:
            # An allowed scheme, or none at all (a relative link to this site, like "java%09script:…").
            assert urlsplit(href).scheme in {"http", "https", "mailto", ""}, (text, href)
            assert not href.lower().lstrip().startswith(("javascript", "data:", "vbscript")), (text, href)
        if "class" in attrs:
            assert tag in {"th", "td"} and attrs["class"] in {"align-left", "align-center", "align-right"}, (text, html)


def test_every_link_it_keeps_is_marked_as_untrusted() -> None:
    html = str(render_markdown("[site](https://example.org/page) and <https://example.org/other>"))
    assert html.count('rel="noopener noreferrer nofollow"') == 2


def test_it_keeps_code_blocks_lists_and_tables_readable() -> None:
    html = str(render_markdown(RICH_MARKDOWN))
    assert "<ol>\n<li>First <em>step</em></li>" in html
    assert "<ul>\n<li>bullet one</li>\n<li>bullet two</li>\n</ul>" in html
    assert "<pre><code>def keep(x):\n    return x &lt; 3 and x &gt; 1\n</code></pre>" in html
    assert "<table>" in html and "<th>Tool</th>" in html and '<th class="align-center">Use</th>' in html
    assert "<td>brush</td>" in html


def test_table_alignment_becomes_a_class_because_the_csp_blocks_inline_styles() -> None:
    html = str(render_markdown("| l | c | r | n |\n|:-|:-:|-:|-|\n| 1 | 2 | 3 | 4 |"))
    assert '<th class="align-left">l</th>' in html and '<td class="align-right">3</td>' in html
    assert '<td class="align-center">2</td>' in html and "<td>4</td>" in html
    assert "style" not in html


def test_it_shows_script_written_as_text_as_text() -> None:
    html = str(render_markdown("Use `<script>` tags; never <script>alert(1)</script>."))
    assert "<code>&lt;script&gt;</code>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
