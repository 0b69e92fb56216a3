"""The statistics page (summary, criterion tabs), the training job page (loss chart and small multiples, kept live)
and the campaign page (live header counts) in headless Chromium under the Content-Security-Policy: tables stay
inside their scroll containers, tabs switch panels. Screenshots under test-artifacts/."""

from pathlib import Path

import pytest

from evaluator.models import JobStatus, TrainingJob
from evaluator.services.rating import judgement_submit
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# Every table's right edge against the edge of its scroll container (a .table-scroll box, else its card): a table
# may be wider than its box only if that box scrolls; the page itself never scrolls sideways.
OVERFLOWING_TABLES = """() => {
  const bad = [];
  for (const table of document.querySelectorAll('main table, table.data')) {
    if (!table.offsetParent) continue;  // in a hidden tab
    const box = table.closest('.table-scroll, .card');
    const scrolls = box && ['auto', 'scroll'].includes(getComputedStyle(box).overflowX);
    if (box && !scrolls && table.getBoundingClientRect().right > box.getBoundingClientRect().right + 1) {
      bad.push(table.className || table.id || 'table');
    }
  }
  if (document.documentElement.scrollWidth > document.documentElement.clientWidth + 1) bad.push('page');
  return bad;
}"""


def _judged(annotators, criteria_wins: int = 10):
    campaign = factories.campaign(name="Archive study", overlap=len(annotators))
    base = factories.variant(name="base model with a rather long descriptive name")
    tuned = factories.variant(name="tuned · DPO #1", parent=base)
    for index in range(criteria_wins + 2):
        comparison = factories.comparison(campaign, variants=(base, tuned))
        side = "right" if index < criteria_wins else "tie"
        for annotator in annotators:
            assignment = factories.assignment(comparison, annotator, left_is_a=True)
            judgement_submit(
                token=str(assignment.token),
                annotator=annotator,
                choices={slug: side for slug in campaign.criterion_slugs},
            )
    return campaign


def test_the_statistics_page_opens_with_its_summary_and_its_tabs_switch_criteria(
    live_server, page, artifacts_dir: Path, annotator, second_annotator
) -> None:
    factories.user("rita", "researcher")
    campaign = _judged([annotator, second_annotator])
    errors = console_errors(page)
    log_in(page, live_server.url, "rita")
    page.goto(f"{live_server.url}/stats/{campaign.pk}/")
    page.wait_for_selector("#criterion-tabs a[aria-current=true]")

    summary = page.locator("#summary")
    assert summary.locator("tbody tr").count() == len(campaign.criterion_slugs)
    assert summary.bounding_box()["y"] < 900  # in the first screen
    assert "tuned · DPO #1 > base model" in summary.inner_text()
    slugs = campaign.criterion_slugs
    panels = page.locator(".tabbed > .tab-panel:visible")
    assert panels.count() == 1 and panels.first.get_attribute("id") == f"criterion-{slugs[0]}"
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.screenshot(path=str(artifacts_dir / "statistics-summary.png"))
    page.screenshot(path=str(artifacts_dir / "statistics-page.png"), full_page=True)

    page.click(f"#criterion-tabs a[href='#criterion-{slugs[-1]}']")
    page.wait_for_selector(f"#criterion-tabs a[href='#criterion-{slugs[-1]}'][aria-current=true]")
    panels = page.locator(".tabbed > .tab-panel:visible")
    assert panels.count() == 1 and panels.first.get_attribute("id") == f"criterion-{slugs[-1]}"
    assert page.locator("#criterion-tabs").is_visible()  # the jump keeps the tab bar in sight
    assert page.locator("#criterion-tabs").bounding_box()["y"] > -1
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.screenshot(path=str(artifacts_dir / "statistics-tab-switched.png"))

    # A summary row's link opens its criterion's tab too.
    page.click(f"#summary a[href='#criterion-{slugs[0]}']")
    page.wait_for_selector(f"#criterion-tabs a[href='#criterion-{slugs[0]}'][aria-current=true]")
    assert page.locator(".tabbed > .tab-panel:visible").first.get_attribute("id") == f"criterion-{slugs[0]}"

    page.set_viewport_size({"width": 760, "height": 900})
    page.goto(f"{live_server.url}/stats/{campaign.pk}/")
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.screenshot(path=str(artifacts_dir / "statistics-page-narrow.png"), full_page=True)
    assert errors == []


def test_the_training_job_page_charts_loss_and_dpo_metrics_apart_and_keeps_them_live(
    live_server, page, artifacts_dir: Path
) -> None:
    factories.user("ada", "admin")
    campaign = factories.campaign(name="Heritage")
    logs = [
        {
            "step": step,
            "epoch": step / 20,
            "loss": 0.69 * 0.93**step,
            "rewards/chosen": 0.011 * step,
            "rewards/rejected": -0.017 * step,
            "rewards/margins": 0.028 * step,
            "rewards/accuracies": min(1.0, 0.45 + step / 25),
        }
        for step in range(1, 9)
    ]
    job = TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=factories.variant(name="smollm2 · greedy"),
        status=JobStatus.RUNNING,
        metrics=logs,
        progress_step=8,
        progress_total=20,
        attempts=1,
        # Written to the row by the worker's run (any machine): the page shows it without the worker's files.
        log_tail="".join(
            f"2026-12-03 10:0{step}:00,000 INFO {line}\n"
            for step, line in enumerate(["attempt 1 of 3 on gpu-2:4117", "training 20 steps", "checkpoint at step 8"])
        ),
    )
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/manage/jobs/{job.pk}/")
    page.wait_for_function("window.htmx !== undefined")
    assert page.locator("#loss-chart svg").count() == 1
    assert page.locator("#metric-charts svg").count() == 4
    # The small multiples sit side by side, each fully inside the card.
    boxes = [chart.bounding_box() for chart in page.locator("#metric-charts svg").all()]
    assert len({round(box["y"]) for box in boxes}) < len(boxes)
    assert page.evaluate(OVERFLOWING_TABLES) == []
    assert page.locator("pre.log").inner_text().endswith("INFO checkpoint at step 8")
    page.screenshot(path=str(artifacts_dir / "training-job-charts.png"), full_page=True)

    # A new step arrives; the poll redraws the charts with it.
    more = {**logs[-1], "step": 9, "loss": 0.2, "rewards/margins": 0.5}
    TrainingJob.objects.filter(pk=job.pk).update(metrics=[*logs, more], progress_step=9)
    page.wait_for_selector("#job-live :text('step 9 of 20')", timeout=10_000)
    assert page.locator("#metric-charts svg").count() == 4
    assert ">0.5<" in page.inner_html("#metric-charts") or ">0.50<" in page.inner_html("#metric-charts")
    page.screenshot(path=str(artifacts_dir / "training-job-charts-live.png"), full_page=True)
    assert errors == []


def test_the_campaign_header_counts_follow_new_judgements_without_a_reload(
    live_server, page, artifacts_dir: Path, annotator
) -> None:
    factories.user("ada", "admin")
    campaign = factories.campaign(name="Live counts", overlap=1)
    first = factories.comparison(campaign)
    factories.comparison(campaign)
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    page.wait_for_function("window.htmx !== undefined")
    assert page.inner_text("#count-judgements") == "0"

    factories.judgement(first, annotator)
    # Polling uses no eval (the page's CSP forbids it): wait for the text through a selector.
    page.wait_for_selector("#count-judgements:text-is('1')", timeout=12_000)
    assert page.inner_text("#count-percent") == "50%"
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.locator("#campaign-counts").screenshot(path=str(artifacts_dir / "campaign-live-counts.png"))
    page.screenshot(path=str(artifacts_dir / "campaign-page.png"), full_page=True)
    assert errors == []


def test_the_retrain_page_warns_about_a_small_round_and_updates_as_the_share_changes(
    live_server, page, artifacts_dir: Path
) -> None:
    factories.user("ada", "admin")
    campaign = factories.campaign(name="Small round", overlap=1)
    for _ in range(20):
        factories.prompt(campaign)
    factories.variant(name="parent")
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/retrain/")
    page.wait_for_function("window.htmx !== undefined")
    assert "With 4 comparisons" in page.inner_text("#round-power")
    assert "too small" in page.inner_text("#round-power")
    page.fill("#id_held_out_share", "0.5")
    page.dispatch_event("#id_held_out_share", "change")
    page.wait_for_selector("#round-power:has-text('With 10 comparisons')")
    page.locator("#round-power").screenshot(path=str(artifacts_dir / "retrain-power-warning.png"))
    assert errors == []
