"""The rating page in headless Chromium: hostile text everywhere runs nothing and loads nothing from elsewhere;
screenshots of the full page at desktop and phone widths (kept under test-artifacts/)."""

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from evaluator.models import AnswerFlag, Comparison, Prompt
from tests import factories
from tests.xss_corpus import RICH_MARKDOWN, XSS_CORPUS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

HOSTILE = "\n\n".join(XSS_CORPUS)

# Everything the page must not contain, collected in the page itself after every <details> is opened.
DOM_REPORT = """() => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const all = Array.from(document.querySelectorAll("*"));
  return {
    foreignScripts: Array.from(document.scripts)
      .map((s) => s.getAttribute("src") || "inline:" + s.textContent.slice(0, 40))
      .filter((src) => !src.startsWith("/static/")),
    handlers: all.flatMap((el) => Array.from(el.attributes).filter((a) => /^on/i.test(a.name))
      .map((a) => el.tagName + " " + a.name)),
    scriptLinks: Array.from(document.querySelectorAll("[href], [src], [action], [formaction]"))
      .map((el) => el.getAttribute("href") || el.getAttribute("src") || el.getAttribute("action") || "")
      .filter((url) => /^\\s*(javascript|vbscript|data):/i.test(url)),
    embedded: Array.from(document.querySelectorAll(
      "img, iframe, object, embed, video, audio, svg, math, style, base, meta[http-equiv], "
      + "link:not([rel=stylesheet][href^='/static/'])"
    )).map((el) => el.tagName),
    styled: all.filter((el) => el.hasAttribute("style")).map((el) => el.tagName),
    htmxIntact: typeof window.htmx === "object" && typeof window.htmx.process === "function",
    pairIntact: document.getElementById("pair") !== null && document.getElementById("pair").tagName === "DIV",
    offSiteForms: Array.from(document.forms).map((f) => f.action).filter((a) => !a.startsWith(location.origin)),
  };
}"""


def _log_in(page, live_server) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "ann")
    page.fill("#id_password", factories.PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}/rate/")
    page.wait_for_function("window.htmx !== undefined")


def _hostile_comparison(campaign, number: int) -> Comparison:
    comparison = factories.comparison(campaign, texts=(f"Answer {number}\n\n{HOSTILE}", f"Other {number}\n\n{HOSTILE}"))
    Prompt.objects.filter(pk=comparison.prompt_id).update(
        text=f"Question {number}\n\n{HOSTILE}", reference=HOSTILE, context=HOSTILE
    )
    passages = [{"document": text, "chunk": index, "text": text, "score": 0.1} for index, text in enumerate(XSS_CORPUS)]
    for candidate in (comparison.candidate_a, comparison.candidate_b):
        candidate.retrieved = passages
        candidate.save(update_fields=["retrieved"])
    return comparison


def test_hostile_text_in_every_field_runs_nothing_and_loads_nothing_from_elsewhere(live_server, page) -> None:
    factories.user("ann", "annotator")
    campaign = factories.campaign(
        overlap=1, guidelines=HOSTILE, allow_both_bad=True, show_reference=True, show_retrieved=True
    )
    for number in range(2):
        _hostile_comparison(campaign, number)
    origin = urlsplit(live_server.url)
    dialogs: list[str] = []
    off_site: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on(
        "request",
        lambda request: (
            off_site.append(request.url)
            if (urlsplit(request.url).scheme, urlsplit(request.url).netloc) != (origin.scheme, origin.netloc)
            else None
        ),
    )

    _log_in(page, live_server)
    shown = page.locator(".prompt .markdown p").first.inner_text()
    assert page.locator(".answer").count() == 2 and shown in {"Question 0", "Question 1"}
    assert page.locator(".passages li").count() == len(XSS_CORPUS)  # both answers' passages, shown once
    first = page.evaluate(DOM_REPORT)
    # Hovering and clicking every link the answers contain must not run anything either.
    for link in page.locator(".answer .markdown a").all():
        link.hover()
    # The second pair arrives through an HTMX swap: hostile text in swapped-in HTML is checked as well.
    for slug in campaign.criterion_slugs:
        page.check(f"input[name='{slug}'][value='both_bad']")
    page.click("button:has-text('Submit and next')")
    page.wait_for_selector("text=" + ("Question 1" if shown == "Question 0" else "Question 0"))
    page.wait_for_timeout(300)
    second = page.evaluate(DOM_REPORT)

    for report in (first, second):
        assert report["foreignScripts"] == [], report
        assert report["handlers"] == [], report
        assert report["scriptLinks"] == [], report
        assert report["embedded"] == [], report
        assert report["styled"] == [], report
        assert report["offSiteForms"] == [], report
        assert report["htmxIntact"] and report["pairIntact"], report
    assert dialogs == [], dialogs
    assert off_site == [], off_site


def test_the_page_reads_well_on_a_desktop_and_a_phone(live_server, browser, artifacts_dir: Path) -> None:
    factories.user("ann", "annotator")
    campaign = factories.campaign(
        overlap=1,
        guidelines="Judge **accuracy first**.\n\n- Prefer answers that cite the archive's rules\n- A refusal is bad",
        allow_both_bad=True,
        show_reference=True,
        show_retrieved=True,
    )
    comparison = factories.comparison(
        campaign,
        texts=(
            RICH_MARKDOWN + "\n" + "Long answers scroll inside their own box. " * 40,
            "Keep paper at **18 °C** and 45 % relative humidity.\n\n> Light fades ink.",
        ),
    )
    Prompt.objects.filter(pk=comparison.prompt_id).update(
        text="How should a small archive store **paper records**?",
        reference="Cool, dry, dark and stable; acid-free enclosures.",
        context="The archive has one room without air conditioning.",
    )
    comparison.candidate_b.retrieved = [
        {"document": "storage-handbook.pdf", "chunk": 3, "text": "Store paper at 16–19 °C.", "score": 0.82},
        {"document": "conservation-faq.md", "chunk": 9, "text": "Avoid *direct* sunlight.", "score": 0.74},
    ]
    comparison.candidate_b.save(update_fields=["retrieved"])

    for name, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", {"width": 390, "height": 844})):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        _log_in(page, live_server)
        page.evaluate("document.querySelectorAll('details.passages, details.flag').forEach((d) => { d.open = true; })")
        boxes = [page.locator(".answer").nth(index).bounding_box() for index in range(2)]
        if name == "desktop":
            assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and boxes[0]["x"] < boxes[1]["x"]  # side by side
        else:
            assert boxes[1]["y"] > boxes[0]["y"] + boxes[0]["height"] - 1  # stacked
            # Nothing is wider than the screen: the page does not scroll sideways.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        scroller = page.locator(".answer .scroll", has_text="Long answers")
        assert scroller.evaluate("(el) => el.scrollHeight > el.clientHeight")  # the long answer scrolls on its own
        assert scroller.evaluate("(el) => getComputedStyle(el).overflowY") == "auto"
        assert page.locator(".answer pre code").count() == 1 and page.locator(".answer table").count() == 1
        # Table alignment comes from a class and the stylesheet: the CSP would block a style attribute.
        assert page.locator(".answer td.align-center").evaluate("(el) => getComputedStyle(el).textAlign") == "center"
        page.screenshot(path=str(artifacts_dir / f"rating-page-{name}.png"), full_page=True)
        context.close()


def test_an_answer_is_flagged_and_the_pair_stays(live_server, page) -> None:
    factories.user("ann", "annotator")
    campaign = factories.campaign(overlap=1)
    factories.comparison(campaign, texts=("I am model X from company Y.", "A plain answer."))
    _log_in(page, live_server)
    page.evaluate("window.sameDocument = true")
    left_text = page.locator(".answer .scroll").first.inner_text()
    page.check("input[name='factual_accuracy'][value='left']")
    page.locator("details.flag summary").first.click()
    page.select_option("#flag-reason-left", "identity")
    page.click("button:has-text('Flag the left answer')")
    page.wait_for_selector("#flag-status-left:has-text('Flagged as')")
    assert page.is_checked("input[name='factual_accuracy'][value='left']")  # the choices made so far are kept
    assert page.evaluate("window.sameDocument") is True
    flag = AnswerFlag.objects.get()
    assert flag.reason == "identity" and flag.candidate.text == left_text
