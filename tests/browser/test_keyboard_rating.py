"""An annotator logs in and rates three pairs with the keyboard alone in headless Chromium (HTMX swaps, no reload)."""

from pathlib import Path

import pytest

from evaluator.models import Judgement
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

OUTCOME = {"left": {True: "a", False: "b"}, "tie": {True: "tie", False: "tie"}, "right": {True: "b", False: "a"}}


def test_an_annotator_rates_three_pairs_with_the_keyboard_only(live_server, page, artifacts_dir: Path) -> None:
    factories.user("ann", "annotator")
    campaign = factories.campaign(name="Keyboard", overlap=1)
    for number in range(3):
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
    assert "0 of your pairs rated · campaign 0% complete" in page.locator("#progress").inner_text()

    # Pair 1: a for every row (each choice moves to the next row), then Enter.
    assert page.evaluate("document.activeElement.name") == campaign.criterion_slugs[0]
    for _ in range(rows):
        page.keyboard.press("a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#progress:has-text('1 of your pairs rated')")

    # Pair 2: Enter too early is refused with a message; then s (tie) everywhere via j/k navigation.
    page.keyboard.press("s")
    page.keyboard.press("Enter")
    assert "every row" in page.locator("#keyboard-status").inner_text()
    assert page.evaluate("window.sameDocument") is True
    page.keyboard.press("k")
    for _ in range(rows):
        page.keyboard.press("s")
    page.keyboard.press("Enter")
    page.wait_for_selector("#progress:has-text('2 of your pairs rated')")

    # Pair 3: → (right) everywhere, then back up to row 1 with ↑ and re-choose it with d; the focus is visible.
    for _ in range(rows):
        page.keyboard.press("ArrowRight")
    for _ in range(rows):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("d")
    page.keyboard.press("1")
    assert page.evaluate("document.activeElement.closest('tr').classList.contains('current')")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.screenshot(path=str(artifacts_dir / "keyboard-rating.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Nothing to rate right now")

    assert page.evaluate("window.sameDocument") is True, "the pairs were swapped in without a page reload"
    assert errors == [], errors
    judgements = list(Judgement.objects.select_related("assignment").prefetch_related("choices").order_by("pk"))
    assert len(judgements) == 3
    for judgement, side in zip(judgements, ["left", "tie", "right"], strict=True):
        outcomes = {choice.criterion: choice.outcome for choice in judgement.choices.all()}
        assert outcomes == dict.fromkeys(campaign.criterion_slugs, OUTCOME[side][judgement.assignment.left_is_a])
