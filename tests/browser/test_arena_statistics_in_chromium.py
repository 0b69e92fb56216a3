"""The statistics page's style-control, outlier-annotator and prompt-category sections in headless Chromium;
screenshots under test-artifacts/stats-style-control.png, stats-outliers.png and stats-categories.png."""

from pathlib import Path

import numpy as np
import pytest

from evaluator.models import Prompt
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PLAIN = "A short answer."
RICH = "# Answer\n\n**Short version:** yes.\n\n## Details\n1. First **point**\n2. Second point\n- an aside\n"


def arena_campaign() -> int:
    """Three variants over two prompt categories; "tuned · rich" writes long markdown and the raters like length; one
    annotator votes against the others."""
    rng = np.random.default_rng(0)
    honest = [factories.user(f"rater{number}", "annotator") for number in range(3)]
    contrarian = factories.user("contrarian", "annotator")
    campaign = factories.campaign(name="Arena statistics", overlap=4)
    variants = [factories.variant(name=name) for name in ("base", "tuned", "tuned · rich")]
    strengths = np.array([0.0, 0.4, 0.2])
    pairs = [(0, 1), (0, 2), (1, 2)]
    for index in range(36):
        first, second = pairs[index % 3]
        texts = tuple(
            RICH * int(rng.integers(1, 4)) if v == 2 else PLAIN * int(rng.integers(1, 8)) for v in (first, second)
        )
        comparison = factories.comparison(campaign, variants=(variants[first], variants[second]), texts=texts)
        Prompt.objects.filter(pk=comparison.prompt_id).update(category=("coding", "maths")[index % 2])
        longer = 1.0 if len(texts[0]) > len(texts[1]) else -1.0
        chance_a = 1.0 / (1.0 + np.exp(-(strengths[first] - strengths[second] + 0.8 * longer)))
        for annotator in honest:
            factories.judgement(comparison, annotator, "a" if rng.random() < chance_a else "b")
        factories.judgement(comparison, contrarian, "b" if chance_a > 0.5 else "a")
    factories.user("rhea", "researcher")
    return campaign.pk


def test_the_style_outlier_and_category_sections_render(live_server, page, artifacts_dir: Path) -> None:
    campaign_id = arena_campaign()
    errors = console_errors(page)
    log_in(page, live_server.url, "rhea")

    page.goto(f"{live_server.url}/stats/{campaign_id}/")
    style = page.locator("#style-control")
    assert "Style-controlled" in style.inner_text() and "Answer length" in style.inner_text()
    style.screenshot(path=str(artifacts_dir / "stats-style-control.png"))
    outliers = page.locator("#outlier-annotators")
    assert "contrarian" in outliers.inner_text()
    outliers.screenshot(path=str(artifacts_dir / "stats-outliers.png"))
    categories = page.locator("#prompt-categories")
    assert "coding" in categories.inner_text() and "maths" in categories.inner_text()
    categories.screenshot(path=str(artifacts_dir / "stats-categories.png"))

    page.click("#prompt-categories a:has-text('maths')")
    page.wait_for_load_state()
    assert page.locator("#id_category").input_value() == "maths"
    assert [text.strip() for text in page.locator("#prompt-categories caption a").all_inner_texts()] == ["maths"]
    assert errors == []
