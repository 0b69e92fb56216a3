"""An annotator logs in and, with the keyboard alone in headless Chromium, flags an answer, rates three pairs, skips
one and calls the last one "both bad" (HTMX swaps, no reload)."""

from pathlib import Path

import pytest

from evaluator.models import AnswerFlag, Assignment, Judgement
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

OUTCOME = {
    "left": {True: "a", False: "b"},
    "tie": {True: "tie", False: "tie"},
    "right": {True: "b", False: "a"},
    "both_bad": {True: "tie", False: "tie"},
}


def test_an_annotator_flags_rates_skips_and_calls_both_bad_with_the_keyboard_only(
    live_server, page, artifacts_dir: Path
) -> None:
    factories.user("ann", "annotator")
    campaign = factories.campaign(name="Keyboard", overlap=1, allow_both_bad=True)
    for number in range(5):
        factories.comparison(campaign, texts=(f"Answer one of pair {number}", f"Answer two of pair {number}"))
    rows = len(campaign.criterion_slugs)
    errors: list[str] = []
    # Console errors include any Content-Security-Policy violation; the missing favicon is no concern here.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "favicon" not in message.location.get("url", "")
            else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{live_server.url}/accounts/login/")
    page.focus("#id_username")
    page.keyboard.type("ann")
    page.keyboard.press("Tab")
    page.keyboard.type(factories.PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/rate/")
    page.wait_for_function("window.htmx !== undefined")
    page.evaluate("window.sameDocument = true")  # lost on any full page load
    assert page.locator(".shortcuts kbd").count() >= 6
    assert "0 rated · campaign 0% complete" in page.locator("#progress").inner_text()

    # Pair 1: f opens the left answer's flag form at its reason; Enter in the note sends it; Escape goes back.
    assert page.evaluate("document.activeElement.name") == campaign.criterion_slugs[0]
    flagged_text = page.locator(".answer .scroll").first.inner_text()
    page.keyboard.press("f")
    assert page.evaluate("document.activeElement.id") == "flag-reason-left"
    page.keyboard.press("l")  # the select's type-ahead: "Leaks which model wrote it"
    page.keyboard.press("Tab")
    page.keyboard.type("Says it is model X")
    page.keyboard.press("Enter")
    page.wait_for_selector("#flag-status-left:has-text('Flagged as')")
    page.keyboard.press("Escape")
    assert page.evaluate("document.getElementById('flag-left').open") is False
    assert page.evaluate("document.activeElement.name") == campaign.criterion_slugs[0]

    # Then a for every row (each choice moves to the next row), then Enter.
    for _ in range(rows):
        page.keyboard.press("a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#progress:has-text('1 rated')")

    # Pair 2: Enter too early is refused with a message; then s (tie) everywhere via j/k navigation.
    page.keyboard.press("s")
    page.keyboard.press("Enter")
    assert "every row" in page.locator("#keyboard-status").inner_text()
    assert page.evaluate("window.sameDocument") is True
    page.keyboard.press("k")
    for _ in range(rows):
        page.keyboard.press("s")
    page.keyboard.press("Enter")
    page.wait_for_selector("#progress:has-text('2 rated')")

    # A pair to skip: x opens the skip form with the reason focused; Enter sends it and the next pair comes.
    skipped_text = page.locator(".answer .scroll").first.inner_text()
    page.keyboard.press("x")
    assert page.evaluate("document.activeElement.id") == "skip-reason"
    page.keyboard.type("I cannot judge this topic")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(text) => !document.querySelector('.answer .scroll').innerText.includes(text)", arg=skipped_text
    )
    # Once the new pair has settled, the keyboard focus is on its first row again.
    page.wait_for_function("(name) => document.activeElement.name === name", arg=campaign.criterion_slugs[0])

    # Pair 3: → (right) everywhere, then back up to row 1 with ↑ and re-choose it with d; the focus is visible.
    for _ in range(rows):
        page.keyboard.press("ArrowRight")
    for _ in range(rows):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("d")
    page.keyboard.press("1")
    assert page.evaluate("document.activeElement.closest('tr').classList.contains('current')")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    # caret="initial": hiding the caret, Playwright leaves style="" on inputs, which the CSP then reports when
    # HTMX swaps them out; it is not the page's doing.
    page.screenshot(path=str(artifacts_dir / "keyboard-rating.png"), full_page=True, caret="initial")
    page.keyboard.press("Enter")
    page.wait_for_selector("#progress:has-text('3 rated')")

    # The last pair: b (both bad) for every row.
    for _ in range(rows):
        page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Nothing to rate right now")

    assert page.evaluate("window.sameDocument") is True, "the pairs were swapped in without a page reload"
    assert errors == [], errors
    judgements = list(Judgement.objects.select_related("assignment").prefetch_related("choices").order_by("pk"))
    assert len(judgements) == 4
    for judgement, side in zip(judgements, ["left", "tie", "right", "both_bad"], strict=True):
        outcomes = {choice.criterion: (choice.outcome, choice.both_bad) for choice in judgement.choices.all()}
        expected = (OUTCOME[side][judgement.assignment.left_is_a], side == "both_bad")
        assert outcomes == dict.fromkeys(campaign.criterion_slugs, expected)
    flag = AnswerFlag.objects.select_related("candidate").get()
    assert (flag.reason, flag.note, flag.candidate.text) == ("identity", "Says it is model X", flagged_text)
    skipped = Assignment.objects.get(skipped_at__isnull=False)
    assert skipped.skip_reason == "I cannot judge this topic" and skipped.released and skipped.completed_at is None
