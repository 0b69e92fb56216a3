"""A judge steering the claim: active selection serves first what the judge split or the humans contradict, and a
judge-screened campaign serves only the pairs the judge found close."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from evaluator.models import (
    JUDGE_CLOSE,
    Assignment,
    Campaign,
    Comparison,
    JobStatus,
    Judge,
    JudgeJob,
    JudgeOutcome,
    Outcome,
    Selection,
)
from evaluator.services.campaigns import campaign_update
from evaluator.services.judge_selection import judge_outcome_of
from evaluator.services.judges import judge_job_missing, verdicts_store
from evaluator.services.rating import assignment_next, comparison_counters_refresh, judgement_submit
from tests import factories
from tests.evaluator.test_rating_cycle_queries import QUERIES_PER_CYCLE, TRANSACTION_CONTROL
from training.judging import JudgeReply

pytestmark = pytest.mark.django_db

# The two orders' choices that make each outcome ("left": the answer shown first).
CHOICES = {
    JudgeOutcome.A: ("left", "right"),
    JudgeOutcome.B: ("right", "left"),
    JudgeOutcome.TIE: ("tie", "tie"),
    JudgeOutcome.SPLIT: ("left", "left"),
    JudgeOutcome.UNREAD: ("left", None),
}


def a_judge(name: str = "steering judge") -> Judge:
    return Judge.objects.create(name=name, kind="endpoint", base_url="http://127.0.0.1:9/v1", model_name="m")


def plant(judge: Judge, pair: Comparison, outcome: str) -> None:
    """The judge's two overall verdicts on `pair` that make `outcome`."""
    factories.judge_verdicts(judge, pair, CHOICES[outcome])


def steered(campaign: Campaign, judge: Judge, **settings: object) -> Campaign:
    """The campaign with `judge` as its selection judge, set as the settings form sets it."""
    return campaign_update(campaign=campaign, selection_judge=judge, **settings)


def sides(campaign: Campaign, side: str = "left") -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


def test_a_pairs_outcome_reads_both_orders() -> None:
    assert judge_outcome_of({"ab": "left", "ba": "right"}) == JudgeOutcome.A
    assert judge_outcome_of({"ab": "right", "ba": "left"}) == JudgeOutcome.B
    assert judge_outcome_of({"ab": "tie", "ba": "tie"}) == JudgeOutcome.TIE
    assert judge_outcome_of({"ab": "left", "ba": "left"}) == JudgeOutcome.SPLIT  # the first answer, whichever
    assert judge_outcome_of({"ab": "left", "ba": "tie"}) == JudgeOutcome.SPLIT
    assert judge_outcome_of({"ab": None, "ba": "left"}) == JudgeOutcome.UNREAD
    assert judge_outcome_of({"ab": "left"}) is None  # one order is no outcome


def test_choosing_a_selection_judge_writes_its_outcomes_and_clearing_it_removes_them() -> None:
    campaign = factories.campaign()
    judge, other = a_judge(), a_judge("another judge")
    pairs = {outcome: factories.comparison(campaign) for outcome in CHOICES}
    unjudged = factories.comparison(campaign)
    for outcome, pair in pairs.items():
        plant(judge, pair, outcome)
        plant(other, pair, JudgeOutcome.A)

    steered(campaign, judge)
    stored = dict(Comparison.objects.filter(campaign=campaign).values_list("pk", "judge_outcome"))
    assert stored == {**{pair.pk: str(outcome) for outcome, pair in pairs.items()}, unjudged.pk: None}

    campaign_update(campaign=campaign, selection_judge=other)
    assert set(Comparison.objects.filter(campaign=campaign).values_list("judge_outcome", flat=True)) == {"a", None}

    campaign_update(campaign=campaign, selection_judge=None)
    assert set(Comparison.objects.filter(campaign=campaign).values_list("judge_outcome", flat=True)) == {None}


def test_a_judge_job_storing_verdicts_updates_the_campaigns_it_steers() -> None:
    campaign = factories.campaign()
    judge = a_judge()
    pairs = [factories.comparison(campaign) for _ in range(3)]
    steered(campaign, judge)
    job = JudgeJob.objects.create(
        judge=judge, campaign=campaign, criteria=["overall"], total=3, status=JobStatus.RUNNING
    )
    units = judge_job_missing(job=job)
    texts = ["VERDICT: A", "VERDICT: B", "VERDICT: A", "VERDICT: A", "VERDICT: TIE", "VERDICT: TIE"]
    replies = {
        request.key: JudgeReply(key=request.key, text=text, prompt_tokens=1, completion_tokens=1, latency_ms=3)
        for request, text in zip((r for unit in units for r in unit.requests), texts, strict=True)
    }

    verdicts_store(job=job, units=units, replies=replies)

    outcomes = dict(Comparison.objects.filter(campaign=campaign).values_list("pk", "judge_outcome"))
    assert outcomes == {pairs[0].pk: "a", pairs[1].pk: "split", pairs[2].pk: "tie"}
    other = factories.campaign()  # a campaign the judge does not steer keeps no outcome
    assert not Comparison.objects.filter(campaign=other).exclude(judge_outcome=None).exists()


def active_campaign_with_history(judge: Judge | None):
    """Five pairs, each judged a certain way by the judge, three with one human vote so far."""
    campaign = factories.campaign(selection=Selection.ACTIVE, overlap=3)
    rater = factories.user("earlier", "annotator")
    pairs = {name: factories.comparison(campaign) for name in ("split", "against", "along", "fresh1", "fresh2")}
    planted = {"split": "split", "against": "a", "along": "a", "fresh1": "a", "fresh2": "a"}
    if judge is not None:
        for name, pair in pairs.items():
            plant(judge, pair, planted[name])
    factories.judgement(pairs["split"], rater, Outcome.A)
    factories.judgement(pairs["against"], rater, Outcome.B)  # the humans so far lean against the judge's a
    factories.judgement(pairs["along"], rater, Outcome.A)
    comparison_counters_refresh(comparison_ids=[pair.pk for pair in pairs.values()])
    if judge is not None:
        steered(campaign, judge)
    return campaign, {pair.pk: name for name, pair in pairs.items()}


def served_in_order(campaign: Campaign, annotator, count: int) -> list[int]:
    served = []
    for _ in range(count):
        assignment = assignment_next(annotator=annotator, campaign=campaign)
        assert assignment is not None
        served.append(assignment.comparison_id)
        judgement_submit(token=str(assignment.token), annotator=annotator, choices=sides(campaign))
    return served


def test_active_selection_serves_first_what_the_judge_split_or_the_humans_contradict(annotator) -> None:
    campaign, names = active_campaign_with_history(a_judge())

    served = [names[pk] for pk in served_in_order(campaign, annotator, 4)]

    assert sorted(served[:2]) == ["against", "split"]
    # Then as without a judge: the fewest judgements first (the unjudged pairs before the one the humans back).
    assert sorted(served[2:]) == ["fresh1", "fresh2"]


def test_without_a_judge_active_selection_serves_the_fewest_judged_first(annotator) -> None:
    campaign, names = active_campaign_with_history(None)

    assert sorted(names[pk] for pk in served_in_order(campaign, annotator, 2)) == ["fresh1", "fresh2"]


def screened_campaign(**fields: object):
    """A judge-screened campaign with one pair of each outcome, one the judge has not judged, and a gold item."""
    campaign = factories.campaign(overlap=1, **fields)
    judge = a_judge()
    pairs = {str(outcome): factories.comparison(campaign) for outcome in CHOICES}
    for outcome, pair in pairs.items():
        plant(judge, pair, outcome)
    pairs["unjudged"] = factories.comparison(campaign)
    gold = factories.comparison(campaign)
    Comparison.objects.filter(pk=gold.pk).update(gold_outcome=Outcome.A)
    plant(judge, gold, JudgeOutcome.A)
    steered(campaign, judge, judge_screening=True)
    return campaign, {pair.pk: name for name, pair in pairs.items()}, gold


def test_a_screened_campaign_serves_only_the_pairs_its_judge_found_close() -> None:
    campaign, names, gold = screened_campaign()
    served = []
    for number in range(len(names) + 2):
        rater = factories.user(f"rater{number}", "annotator")
        assignment = assignment_next(annotator=rater, campaign=campaign)
        if assignment is not None:
            served.append(assignment.comparison_id)
    assert sorted(names[pk] for pk in served) == sorted(JUDGE_CLOSE)
    assert gold.pk not in served  # gold items come only at the campaign's gold rate, 0 here


def test_a_screened_campaign_still_serves_gold_items_at_its_rate() -> None:
    campaign, _, gold = screened_campaign(gold_rate=1.0)
    rater = factories.user("gold rater", "annotator")
    assignment = assignment_next(annotator=rater, campaign=campaign)
    assert assignment is not None and assignment.comparison_id == gold.pk


def test_screening_refuses_a_campaign_without_a_judge() -> None:
    from evaluator.errors import ServiceError

    campaign = factories.campaign()
    with pytest.raises(ServiceError, match="needs a selection judge"):
        campaign_update(campaign=campaign, judge_screening=True)
    campaign.refresh_from_db()
    assert campaign.judge_screening is False


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL partial index")
def test_the_screened_candidates_come_from_their_own_claim_index() -> None:
    campaign, _, _ = screened_campaign()
    candidates = Comparison.objects.filter(
        campaign=campaign, gold_outcome__isnull=True, claimable=True, judge_outcome__in=JUDGE_CLOSE
    ).order_by("rank_key")[:32]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = candidates.explain()
    assert "comparison_screened_claim_idx" in plan


@pytest.mark.django_db(transaction=True)
def test_a_rating_cycle_in_a_judge_steered_campaign_costs_no_more_statements(client, annotator, settings) -> None:
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    campaign = factories.campaign(overlap=3, selection=Selection.ACTIVE)
    judge = a_judge()
    for i in range(6):
        plant(judge, factories.comparison(campaign, texts=(f"answer a{i}", f"answer b{i}")), JudgeOutcome.SPLIT)
    steered(campaign, judge, judge_screening=True)
    client.force_login(annotator)
    client.get(reverse("rate"))
    first = Assignment.objects.get(annotator=annotator)

    with CaptureQueriesContext(connection) as queries:
        response = client.post(reverse("rate_submit", args=[first.token]), sides(campaign), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    sent = [query["sql"] for query in queries.captured_queries]
    statements = [sql for sql in sent if sql.split()[0] not in ("BEGIN", "COMMIT")]
    assert len(statements) == QUERIES_PER_CYCLE, "\n".join(sql[:160] for sql in sent)
    assert len(sent) - len(statements) == TRANSACTION_CONTROL
    claim = next(sql for sql in statements if "FOR NO KEY UPDATE" in sql and "judge_outcome" in sql)
    assert "CASE WHEN" in claim  # the judge's priority is ordered by in the claim itself


def test_the_settings_form_sets_the_judge_and_refuses_screening_without_one(client, admin_user) -> None:
    campaign = factories.campaign()
    judge = a_judge()
    pair = factories.comparison(campaign)
    plant(judge, pair, JudgeOutcome.TIE)
    client.force_login(admin_user)
    base = {"name": campaign.name, "overlap": 2, "selection": "active"}

    refused = client.post(reverse("campaign_update", args=[campaign.pk]), {**base, "judge_screening": "on"})
    assert refused.status_code == 302
    campaign.refresh_from_db()
    assert campaign.judge_screening is False and campaign.selection_judge_id is None

    client.post(
        reverse("campaign_update", args=[campaign.pk]),
        {**base, "selection_judge": judge.pk, "judge_screening": "on"},
    )
    campaign.refresh_from_db()
    pair.refresh_from_db()
    assert campaign.selection_judge_id == judge.pk and campaign.judge_screening is True
    assert pair.judge_outcome == JudgeOutcome.TIE
    page = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert "Screen pairs with the judge" in page and f'value="{judge.pk}" selected' in page


def test_the_statistics_page_says_a_screened_campaigns_figures_cover_only_close_pairs(client, researcher) -> None:
    campaign, _, _ = screened_campaign()
    client.force_login(researcher)

    page = client.get(reverse("stats_campaign", args=[campaign.pk])).content.decode()

    assert "Judge-screened campaign." in page and "not an estimate over all of the campaign" in page
    assert "steering judge" in page
    plain = factories.campaign()
    assert "Judge-screened" not in client.get(reverse("stats_campaign", args=[plain.pk])).content.decode()


def test_a_screened_campaigns_progress_counts_only_what_it_serves() -> None:
    from evaluator.selectors.campaigns import campaign_progress

    campaign, _, _ = screened_campaign()

    progress = campaign_progress(campaign=campaign)

    # a, b and the unjudged pair are screened out; tie, split, unread and the gold item are wanted.
    assert (progress["screened_out"], progress["comparisons"]) == (3, len(JUDGE_CLOSE) + 1)
    assert progress["wanted"] == progress["comparisons"] * campaign.overlap
