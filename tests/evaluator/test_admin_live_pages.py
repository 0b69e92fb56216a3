"""Admin and researcher pages that stay readable and true: the training chart (loss alone, the DPO metrics as small
multiples with round ticks), live campaign header counts, the statistics summary with its criterion tabs, the
power of a retrain's round against its parent, and progress that holds when a quota is lowered or a pair of
identical answers is never served."""

import math

import pytest
from django.core.cache import cache
from django.urls import reverse

from evaluator.models import Campaign, JobStatus, TrainingJob
from evaluator.selectors.campaigns import campaign_progress
from evaluator.selectors.rating import campaign_percent_done, comparisons_with_identical_answers
from evaluator.selectors.training import held_out_prompt_count, round_power
from evaluator.stats.plots import line_chart, nice_ticks, small_multiples, tick_format
from evaluator.stats.statistics import additional_n_for_power, cohens_h, sign_test_power
from tests import factories
from tests.evaluator.test_statistics_pages import judged_campaign

pytestmark = pytest.mark.django_db

DPO_LOGS = [
    {
        "step": step,
        "epoch": step / 8,
        "loss": 0.69 - step * 0.05,
        "rewards/chosen": 0.02 * step,
        "rewards/rejected": -0.03 * step,
        "rewards/margins": 0.05 * step,
        "rewards/accuracies": min(1.0, 0.4 + step / 10),
    }
    for step in range(1, 7)
]


# Round ticks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.013, 0.731), (-0.27, 0.41), (0.0, 1.0), (1.0, 37.0), (0.6931, 0.6931), (-2.3, 4.1), (5e-5, 9e-5)]
)
def test_nice_ticks_are_round_steps_that_cover_the_data(lo, hi) -> None:
    ticks = nice_ticks(lo, hi)
    step = ticks[1] - ticks[0]
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 8
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-6
    labels = [tick_format(ticks).format(tick) for tick in ticks]
    assert len(set(labels)) == len(labels)  # every tick reads differently, with no more decimals than it needs
    assert all(len(label.split(".")[-1]) <= 6 for label in labels)


def test_step_ticks_are_whole_numbers() -> None:
    assert nice_ticks(1, 3, integer=True) == [1.0, 2.0, 3.0]
    assert all(tick == int(tick) for tick in nice_ticks(1, 250, integer=True))


def test_small_multiples_give_each_metric_its_own_axis_over_the_same_steps() -> None:
    series = {"reward accuracy": [(1.0, 0.5), (4.0, 1.0)], "reward margin": [(2.0, 0.01), (3.0, 0.02)]}
    accuracy, margin = small_multiples(series, title="job", x_label="step")
    assert "■ reward accuracy" in accuracy and "reward margin" not in accuracy
    assert ">0.6<" in accuracy and ">0.0150<" in margin  # each on the ticks of its own range
    assert ">1<" in margin and ">4<" in margin  # the x-axis spans every metric's steps
    assert small_multiples({}, title="job", x_label="step") == []
    assert line_chart({"loss": [(1.0, 0.7)]}, title="one step", x_label="step").count("<circle") == 1


# The training job page --------------------------------------------------------------------------------------


def test_the_job_page_charts_the_loss_alone_and_each_dpo_metric_in_a_small_chart_and_keeps_them_live(
    client, admin_user
) -> None:
    campaign = factories.campaign()
    job = TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=factories.variant(name="parent"),
        status=JobStatus.RUNNING,
        metrics=DPO_LOGS,
        progress_step=6,
        progress_total=8,
        attempts=1,
    )
    client.force_login(admin_user)
    html = client.get(reverse("training_job_detail", args=[job.pk])).content.decode()
    loss = html.split('id="loss-chart"')[1].split("</figure>")[0]
    assert "■ loss" in loss and "reward" not in loss
    panels = html.split('id="metric-charts"')[1].split("</div>")[0]
    assert panels.count("<svg") == 4
    for label in ("reward chosen", "reward rejected", "reward margin", "reward accuracy"):
        assert f"■ {label}" in panels
    assert 'hx-trigger="every 3s"' in html

    live = client.get(reverse("training_job_detail", args=[job.pk]), headers={"HX-Request": "true"})
    body = live.content.decode()
    assert live.status_code == 200 and "<html" not in body
    assert 'id="loss-chart"' in body and body.split('id="metric-charts"')[1].count("<svg") == 4


def test_an_sft_job_gets_its_loss_chart_and_no_empty_small_multiples(client, admin_user) -> None:
    logs = [{"step": step, "loss": 2.0 - step / 10} for step in (1, 2, 3)]
    job = TrainingJob.objects.create(
        campaign=factories.campaign(), parent_variant=factories.variant(), method="sft", metrics=logs
    )
    client.force_login(admin_user)
    html = client.get(reverse("training_job_detail", args=[job.pk])).content.decode()
    assert 'id="loss-chart"' in html and 'id="metric-charts"' not in html


# Live campaign header counts ---------------------------------------------------------------------------------


def test_the_campaign_header_counts_refresh_by_polling_and_stop_once_the_campaign_is_closed(
    client, admin_user, annotator
) -> None:
    campaign = factories.campaign(overlap=1)
    comparison = factories.comparison(campaign)
    client.force_login(admin_user)
    page = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    header = page.split('id="campaign-counts"')[1].split("</p>")[0]
    assert f'hx-get="/manage/campaigns/{campaign.pk}/counts/"' in header and 'hx-trigger="every 5s"' in header
    assert '<span id="count-judgements">0</span> of 1 judgements' in header

    factories.judgement(comparison, annotator)
    factories.comparison(campaign)
    live = client.get(reverse("campaign_counts_live", args=[campaign.pk]), headers={"HX-Request": "true"})
    body = live.content.decode()
    assert live.status_code == 200 and "<html" not in body
    assert '<span id="count-comparisons">2</span>' in body and '<span id="count-judgements">1</span> of 2' in body
    assert '<span id="count-percent">50%</span>' in body

    Campaign.objects.filter(pk=campaign.pk).update(state="closed")
    closed = client.get(reverse("campaign_counts_live", args=[campaign.pk]), headers={"HX-Request": "true"})
    assert closed.status_code == 286 and "hx-trigger" not in closed.content.decode()  # htmx stops polling


# The statistics page ----------------------------------------------------------------------------------------


def test_the_statistics_page_opens_with_a_summary_of_leaders_and_significant_differences(
    client, researcher, annotator, second_annotator
) -> None:
    campaign, _, _ = judged_campaign([annotator, second_annotator], wins_for_b=14, ties=0)
    client.force_login(researcher)
    html = client.get(reverse("stats_campaign", args=[campaign.pk])).content.decode()

    summary = html.split('id="summary"')[1].split("</section>")[0]
    assert html.index('id="summary"') < html.index('id="criterion-tabs"') < html.index('class="card criterion')
    rows = summary.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == len(campaign.criterion_slugs)
    for row in rows:
        assert "<strong>tuned</strong>" in row
        assert "tuned &gt; base &lt;b&gt;model&lt;/b&gt;" in row and "p &lt; 0.001" in row
    tabs = html.split('id="criterion-tabs"')[1].split("</nav>")[0]
    for slug in campaign.criterion_slugs:
        assert f'href="#criterion-{slug}"' in tabs and f'id="criterion-{slug}"' in html
    assert 'src="/static/tabs.js"' in html


def test_the_summary_says_none_when_no_difference_survives_holm(client, researcher, annotator) -> None:
    campaign, _, _ = judged_campaign([annotator], wins_for_b=2, ties=2)
    client.force_login(researcher)
    report = client.get(reverse("stats_campaign", args=[campaign.pk])).context["report"]
    assert all(section.significant == [] for section in report.sections)
    assert all(len(section.leaders) >= 1 and section.votes == 4 for section in report.sections)


# The power of a retrain's round ------------------------------------------------------------------------------


def test_the_sign_test_power_matches_the_sample_size_the_statistics_ask_for() -> None:
    needed = int(additional_n_for_power(cohens_h(0.6), 0))
    assert needed == 194
    assert sign_test_power(needed, 0.6) == pytest.approx(0.80, abs=0.01)
    assert sign_test_power(3, 0.6) < 0.1 and sign_test_power(0, 0.6) == 0.0


def test_a_round_of_a_few_held_out_prompts_is_warned_about_with_its_power(client, admin_user) -> None:
    campaign = factories.campaign(overlap=1)
    for _ in range(15):
        factories.prompt(campaign)
    parent = factories.variant(name="parent")
    client.force_login(admin_user)

    html = client.get(reverse("training_queue", args=[campaign.pk])).content.decode()
    note = html.split('id="round-power"')[1].split("</div>")[0]
    power = sign_test_power(3, 0.6)  # 20% of 15 prompts held out, one sample, k = 1
    assert "too small" in note and "With 3 comparisons" in note
    assert f'detected with <span id="round-power-figure">{100 * power:.0f}%</span> power' in note
    assert "the round gets 3 judgements" in note
    assert "~194 judgements are needed for 80%" in note and "about 194 held-out prompts" in note
    assert f'hx-get="/manage/campaigns/{campaign.pk}/retrain/power/"' in note

    live = client.get(
        reverse("retrain_power", args=[campaign.pk]),
        {"held_out_ids": "p1\np2\np3\np4\np5", "parent_variant": parent.pk},
    )
    assert live.status_code == 200 and "With 5 comparisons" in live.content.decode()


def test_a_round_large_enough_is_not_warned_about() -> None:
    campaign = factories.campaign(overlap=3)
    parent = factories.variant(generation_settings={"samples_per_prompt": 2})
    power = round_power(campaign=campaign, held_out=40, parent=parent)
    assert (power.comparisons, power.judgements) == (80, 240) and not power.too_small
    assert held_out_prompt_count(total=15, share=0.2) == 3 and held_out_prompt_count(total=1, share=0.5) == 0


# Progress that stays true -----------------------------------------------------------------------------------


def test_a_lowered_quota_reads_as_reached_never_as_more_done_than_the_quota(client, annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=10)
    for _ in range(3):
        factories.judgement(factories.comparison(campaign), annotator)
    factories.assignment(factories.comparison(campaign), annotator)  # the pair open when the quota is lowered
    Campaign.objects.filter(pk=campaign.pk).update(quota_per_annotator=2)
    client.force_login(annotator)

    rating = client.get(reverse("rate")).content.decode()
    assert "3 done — quota 2 reached" in rating and "3 of your 2" not in rating
    listing = client.get(reverse("rate_campaigns")).content.decode()
    assert "3 pairs — quota 2 reached" in listing and "of your 2" not in listing


def test_pairs_of_identical_answers_stay_out_of_the_campaign_progress(client, admin_user, annotator) -> None:
    cache.clear()
    campaign = factories.campaign(overlap=1)
    factories.judgement(factories.comparison(campaign), annotator)
    factories.comparison(campaign)
    same = factories.comparison(campaign, texts=("The  same\nanswer. ", "The same answer."))
    factories.judgement(same, annotator)  # from older data, before such pairs were left out
    factories.comparison(campaign, texts=("Same words", "Same words"))

    assert set(comparisons_with_identical_answers(campaign=campaign)) >= {same}
    progress = campaign_progress(campaign=campaign)
    assert (progress["comparisons"], progress["judgements"], progress["wanted"], progress["identical"]) == (2, 1, 2, 2)
    assert progress["percent"] == 50 and campaign_percent_done(campaign=campaign) == 50
    client.force_login(admin_user)
    html = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert "2 pairs of identical answers left out" in html


def test_a_campaign_without_prompts_says_so_instead_of_a_power_figure(client, admin_user) -> None:
    campaign = factories.campaign()
    client.force_login(admin_user)
    html = client.get(reverse("retrain_power", args=[campaign.pk])).content.decode()
    assert "No prompts yet" in html and "0 comparisons" not in html
