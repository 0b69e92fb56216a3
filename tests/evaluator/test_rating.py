from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.admin import site
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.urls import URLResolver, get_resolver, resolve, reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from scipy.stats import binomtest

from evaluator.errors import ServiceError
from evaluator.models import (
    Adjudication,
    AnnotatorFlag,
    AnswerFlag,
    Assignment,
    Campaign,
    CampaignMember,
    Candidate,
    Comparison,
    CriterionChoice,
    Document,
    DocumentCollection,
    GenerationJob,
    JobStatus,
    Judgement,
    ModelExport,
    ModelVariant,
    Prompt,
    QAPair,
    QASet,
    ReviewResolution,
    Selection,
    StatisticsSnapshot,
    TrainingJob,
)
from evaluator.selectors.campaigns import annotator_gold_accuracy
from evaluator.services.rating import _candidate_locked, assignment_next, judgement_submit, leases_release
from tests import factories

pytestmark = pytest.mark.django_db


def all_sides(campaign, side: str) -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


@pytest.mark.parametrize(
    ("side", "left_is_a", "outcome"),
    [("left", True, "a"), ("left", False, "b"), ("right", True, "b"), ("right", False, "a"), ("tie", True, "tie")],
)
def test_a_screen_side_is_stored_as_the_variant_that_was_shown_there(side, left_is_a, outcome, annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator, left_is_a=left_is_a)
    judgement_submit(token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, side))
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {outcome}


def test_a_repeated_submission_stores_one_judgement_and_returns_it(annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    first = judgement_submit(token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, "left"))
    second = judgement_submit(token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, "right"))
    assert first.pk == second.pk
    assert Judgement.objects.count() == 1
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {"a"}


def test_another_annotators_token_is_refused_and_writes_nothing(annotator, second_annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    with pytest.raises(PermissionDenied):
        judgement_submit(token=str(assignment.token), annotator=second_annotator, choices=all_sides(campaign, "left"))
    assert not Judgement.objects.exists()


def test_a_judgement_missing_a_criterion_is_refused_whole(annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    choices = all_sides(campaign, "left")
    del choices["safety"]
    with pytest.raises(ServiceError, match="safety"):
        judgement_submit(token=str(assignment.token), annotator=annotator, choices=choices)
    assert not Judgement.objects.exists()
    assert not CriterionChoice.objects.exists()


def test_a_comparison_is_handed_out_at_most_k_times_and_never_twice_to_one_annotator(annotator) -> None:
    campaign = factories.campaign(overlap=2)
    factories.comparison(campaign)
    others = [factories.user(f"extra{i}", "annotator") for i in range(3)]

    first = assignment_next(annotator=annotator)
    assert assignment_next(annotator=annotator) == first  # the open lease is handed back, not a new one
    judgement_submit(token=str(first.token), annotator=annotator, choices=all_sides(campaign, "tie"))
    assert assignment_next(annotator=annotator) is None
    assert assignment_next(annotator=others[0]) is not None
    assert assignment_next(annotator=others[1]) is None  # k = 2 reached
    assert Assignment.objects.count() == 2


def test_the_pair_left_is_found_when_the_candidate_batch_holds_only_the_annotators_own(annotator, settings) -> None:
    # One candidate each side of the random point: once most pairs are the annotator's own, the batch holds
    # only those, and the claim must look past them (every pair keeps room: k = 3).
    settings.PREFLOOP_CLAIM_CANDIDATES = 1
    campaign = factories.campaign(overlap=3)
    pairs = {factories.comparison(campaign).pk for _ in range(12)}

    served = []
    for _ in pairs:
        assignment = assignment_next(annotator=annotator)
        served.append(assignment.comparison_id)
        judgement_submit(token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, "tie"))

    assert sorted(served) == sorted(pairs)
    assert assignment_next(annotator=annotator) is None


def test_the_claim_checks_its_candidates_against_the_annotators_pairs_one_by_one(annotator) -> None:
    # The annotator's own pairs are left out of the batch by an index look-up of each candidate's assignments,
    # not by reading the annotator's whole history (a cost that grew with it).
    campaign = factories.campaign(overlap=3)
    question = factories.prompt(campaign)
    first, second = factories.variant(), factories.variant()
    answers = Candidate.objects.bulk_create(
        Candidate(
            prompt=question,
            variant=variant,
            sample_index=i,
            text=f"Answer {i} of {variant.name}",
            seed=i,
            prompt_tokens=5,
            completion_tokens=7,
            latency_ms=12,
        )
        for variant in (first, second)
        for i in range(2000)
    )
    comparisons = Comparison.objects.bulk_create(
        Comparison(campaign=campaign, prompt=question, candidate_a=a, candidate_b=b, variant_a=first, variant_b=second)
        for a, b in zip(answers[:2000], answers[2000:], strict=True)
    )
    now = timezone.now()
    Assignment.objects.bulk_create(  # a long history: 1,500 pairs rated
        Assignment(comparison=comparison, annotator=annotator, left_is_a=True, lease_expires_at=now, completed_at=now)
        for comparison in comparisons[:1500]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE evaluator_assignment, evaluator_comparison")
    shape = {"gold": False, "selection": campaign.selection, "judged": False, "screened": False, "size": 16}
    values = {"campaign": campaign.pk, "annotator": annotator.pk, "overlap": 3, "start": 0.5, "passed": ()}

    with transaction.atomic():
        probed = _candidate_locked._build(**shape, **values, probe=True).explain()
        whole = _candidate_locked._build(**shape, **values, probe=False).explain()

    # Each candidate looked up by its own id (an anti join on comparison_id), no list of the annotator's pairs.
    assert "Nested Loop Anti Join" in probed and "comparison_id = evaluator_comparison.id" in probed, probed
    assert "SubPlan" not in probed, probed
    assert "hashed SubPlan" in whole, whole  # the fallback reads the history as a hashed list


def test_an_expired_lease_returns_the_comparison_to_the_pool_and_cannot_push_it_past_k(annotator) -> None:
    campaign = factories.campaign(overlap=1)
    factories.comparison(campaign)
    late = assignment_next(annotator=annotator)
    Assignment.objects.filter(pk=late.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    newcomer = factories.user("newcomer", "annotator")
    fresh = assignment_next(annotator=newcomer)
    assert fresh is not None and fresh.comparison_id == late.comparison_id
    with pytest.raises(ServiceError, match="time ran out"):
        judgement_submit(token=str(late.token), annotator=annotator, choices=all_sides(campaign, "left"))
    judgement_submit(token=str(fresh.token), annotator=newcomer, choices=all_sides(campaign, "left"))
    assert Judgement.objects.count() == 1


def test_an_expired_lease_is_released_and_a_late_judgement_with_room_left_still_counts(annotator) -> None:
    campaign = factories.campaign(overlap=1)
    comparison = factories.comparison(campaign)
    late = assignment_next(annotator=annotator)
    Assignment.objects.filter(pk=late.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert leases_release() == 1
    comparison.refresh_from_db()
    assert comparison.live_assignments == 0
    judgement_submit(token=str(late.token), annotator=annotator, choices=all_sides(campaign, "left"))
    comparison.refresh_from_db()
    assert (comparison.live_assignments, comparison.judgement_count) == (1, 1)
    assert assignment_next(annotator=factories.user("newcomer", "annotator")) is None


def test_the_lease_lasts_the_configured_minutes(annotator, settings) -> None:
    settings.PREFLOOP_LEASE_MINUTES = 7
    factories.comparison(factories.campaign())
    now = timezone.now()
    assert assignment_next(annotator=annotator, now=now).lease_expires_at == now + timedelta(minutes=7)


def test_an_annotator_gets_no_more_than_the_campaign_quota_counting_done_and_leased_work(annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=2)
    for _ in range(4):
        factories.comparison(campaign)
    now = timezone.now()
    first = assignment_next(annotator=annotator, now=now)
    judgement_submit(token=str(first.token), annotator=annotator, choices=all_sides(campaign, "tie"))
    second = assignment_next(annotator=annotator, now=now)
    assert second is not None and second.pk != first.pk
    judgement_submit(token=str(second.token), annotator=annotator, choices=all_sides(campaign, "tie"))
    assert assignment_next(annotator=annotator, now=now) is None  # 1 done + 1 done = quota
    assert assignment_next(annotator=factories.user("other", "annotator"), now=now) is not None


def test_an_expired_unfinished_lease_no_longer_counts_against_the_quota(annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=1)
    factories.comparison(campaign)
    factories.comparison(campaign)
    now = timezone.now()
    abandoned = assignment_next(annotator=annotator, now=now)
    later = now + timedelta(minutes=21)
    fresh = assignment_next(annotator=annotator, now=later)
    assert fresh is not None and fresh.comparison_id != abandoned.comparison_id


def test_gold_items_are_mixed_in_at_the_campaign_rate_and_look_like_any_other(annotator) -> None:
    campaign = factories.campaign(overlap=1, gold_rate=0.25)
    plain_ids, gold_ids = _bulk_comparisons(campaign, 300), _bulk_comparisons(campaign, 300, gold="a")
    now = timezone.now()
    served = []
    for step in range(400):  # each claim lets the previous lease run out: no submit needed to move on
        served.append(assignment_next(annotator=annotator, now=now + timedelta(minutes=21 * step)))
    gold_served = sum(item.comparison_id in gold_ids for item in served)
    assert binomtest(gold_served, len(served), 0.25).pvalue > 0.001, gold_served
    assert {item.comparison_id for item in served} <= plain_ids | gold_ids
    assert len({item.comparison_id for item in served}) == len(served)


def test_no_gold_item_is_served_at_gold_rate_zero(annotator) -> None:
    campaign = factories.campaign(overlap=1)
    gold_ids = _bulk_comparisons(campaign, 5, gold="a")
    plain_ids = _bulk_comparisons(campaign, 5)
    now = timezone.now()
    served = {
        assignment_next(annotator=annotator, now=now + timedelta(minutes=21 * step)).comparison_id for step in range(5)
    }
    assert served == plain_ids and not served & gold_ids
    assert assignment_next(annotator=annotator, now=now + timedelta(minutes=21 * 5)) is None


def test_gold_accuracy_is_the_share_of_overall_choices_that_match_the_gold_outcome(annotator, second_annotator):
    campaign = factories.campaign()
    golds = [factories.comparison(campaign) for _ in range(4)]
    Comparison.objects.filter(pk__in=[gold.pk for gold in golds]).update(gold_outcome="a")
    for gold, outcome in zip(golds, ["a", "a", "b", "tie"], strict=True):
        factories.judgement(gold, annotator, {"overall": outcome, "safety": "a"})
    factories.judgement(factories.comparison(campaign), annotator, "b")  # not gold: not counted
    assert annotator_gold_accuracy(campaign=campaign, annotator=annotator) == 0.5
    assert annotator_gold_accuracy(campaign=campaign, annotator=second_annotator) is None


def test_active_selection_serves_the_fewest_judged_first_then_the_most_uncertain(annotator) -> None:
    campaign = factories.campaign(overlap=5, selection=Selection.ACTIVE)
    judges = [factories.user(f"judge{i}", "annotator") for i in range(3)]
    settled, split, untouched, unsure = (factories.comparison(campaign) for _ in range(4))
    for judge in judges[:2]:
        _judge_through_the_service(judge, settled, "left")
    _judge_through_the_service(judges[0], split, "left")
    _judge_through_the_service(judges[1], split, "right")
    _judge_through_the_service(judges[2], unsure, "tie")

    order = []
    now = timezone.now()
    for step in range(4):
        order.append(assignment_next(annotator=annotator, now=now + timedelta(minutes=21 * step)).comparison_id)
    # untouched: 0 judgements; unsure: 1 (no decisive vote = 50/50); split (margin 0) before settled (margin 1).
    assert order == [untouched.pk, unsure.pk, split.pk, settled.pk]


def test_random_selection_serves_the_least_filled_comparisons_first(annotator) -> None:
    campaign = factories.campaign(overlap=3)
    busy = factories.comparison(campaign)
    idle = factories.comparison(campaign)
    assignment_next(annotator=factories.user("early", "annotator"))
    busy_first = Assignment.objects.get().comparison_id
    assert assignment_next(annotator=annotator).comparison_id == ({busy.pk, idle.pk} - {busy_first}).pop()


@pytest.mark.slow
def test_left_right_placement_over_four_thousand_assignments_is_a_fair_coin() -> None:
    # 4,000 real claims through the whole service: 100 annotators claim once a round for 40 rounds, each round
    # past the last one's leases (which go back to the pool); then the stored sides are counted. At this size the
    # test at p 0.001 catches a coin that favours one side by 3 points or more.
    campaign = factories.campaign(overlap=1)
    _bulk_comparisons(campaign, 2_000)
    annotators = [factories.user(f"placer{i}", "annotator") for i in range(100)]
    now = timezone.now()
    for step in range(40):
        for annotator in annotators:
            assert assignment_next(annotator=annotator, now=now + timedelta(minutes=21 * step))
    stored = Assignment.objects.filter(comparison__campaign=campaign)
    left = stored.filter(left_is_a=True).count()
    assert stored.count() == 4_000
    assert binomtest(left, 4_000, 0.5).pvalue > 0.001, left


def _judge_through_the_service(judge, comparison, side: str) -> None:
    task = factories.assignment(comparison, judge)
    judgement_submit(token=str(task.token), annotator=judge, choices=all_sides(comparison.campaign, side))


def _bulk_comparisons(campaign, count: int, *, gold: str | None = None) -> set[int]:
    """`count` comparisons of one prompt between two variants (sample i against sample i), made in bulk."""
    first, second = factories.variant(), factories.variant()
    question = factories.prompt(campaign)
    fields = {"seed": 1, "prompt_tokens": 1, "completion_tokens": 1, "latency_ms": 1}
    made = Candidate.objects.bulk_create(
        Candidate(prompt=question, variant=variant, sample_index=index, text=f"An answer by {variant.name}.", **fields)
        for index in range(count)
        for variant in (first, second)
    )
    rows = Comparison.objects.bulk_create(
        Comparison(
            campaign=campaign,
            prompt=question,
            candidate_a=made[2 * index],
            candidate_b=made[2 * index + 1],
            variant_a=first,
            variant_b=second,
            gold_outcome=gold,
        )
        for index in range(count)
    )
    return {row.pk for row in rows}


# The access matrix: every URL pattern of the project, what each role gets. A redirect is written as the start of
# its Location; LOGIN is the login page. test_every_url_pattern_has_a_row_in_the_access_matrix keeps it complete.
LOGIN = "/accounts/login/"
ROLES = ("anonymous", "annotator", "researcher", "admin", "outsider")  # outsider: logged in, in no group


def everyone(expected: int | str) -> dict[str, int | str]:
    return dict.fromkeys(ROLES, expected)


def only(*roles: str, status: int | str = 200, anonymous: int | str = LOGIN) -> dict[str, int | str]:
    return {"anonymous": anonymous, **{role: status if role in roles else 403 for role in ROLES[1:]}}


STAFF = ("researcher", "admin")
API = {"anonymous": 401}  # DRF's token authentication asks for credentials rather than redirecting
ACCESS: dict[str, tuple[str, str, dict[str, int | str]]] = {
    "home": (
        "get",
        "/",
        {"anonymous": LOGIN, "annotator": "/rate/", "researcher": "/stats/", "admin": "/manage/", "outsider": 403},
    ),
    "healthz": ("get", "/healthz", everyone(200)),
    "readyz": ("get", "/readyz", everyone(200)),  # database, broker and cache all answer in the tests
    "demo_preparation": ("get", "/demo/", {**everyone(200), "anonymous": LOGIN}),  # any signed-in user
    "login": ("get", "/accounts/login/", everyone(200)),
    "logout": ("post", "/accounts/logout/", everyone(LOGIN)),
    "rate": ("get", "/rate/", only("annotator")),
    "rate_campaigns": ("get", "/rate/campaigns/", only("annotator")),
    # Picking a campaign and "next" write only the session.
    "rate_campaign_pick": ("post", "/rate/campaigns/{campaign}/", only("annotator", status="/rate/")),
    "rate_next": ("post", "/rate/next/", only("annotator", status="/rate/")),
    "rate_submit": ("post", "/rate/{token}/", only("annotator", status=400)),  # an empty rating: the pair again
    "rate_skip": ("post", "/rate/{token}/skip/", only("annotator", status=302)),  # no reason: back, with it said
    "rate_flag": ("post", "/rate/{token}/flag/", only("annotator", status=302)),
    # No such qualification item; the campaign asks for no qualification: refused with a message, nothing written.
    "rate_qualification_submit": (
        "post",
        "/rate/qualification/00000000-0000-4000-8000-000000000000/",
        only("annotator", status=404),
    ),
    "rate_qualification_retry": (
        "post",
        "/rate/qualification/campaigns/{campaign}/attempts/",
        only("annotator", status="/rate/"),
    ),
    "stats_index": ("get", "/stats/", only(*STAFF)),
    "api_token_rotate": ("post", "/stats/token/", only(*STAFF, status="/stats/")),  # writes the token: checked below
    "stats_campaign": ("get", "/stats/{campaign}/", only(*STAFF)),
    "export_judgements": ("get", "/stats/{campaign}/export/judgements.csv", only(*STAFF)),
    "export_statistics": ("get", "/stats/{campaign}/export/statistics.json", only(*STAFF)),
    "export_dpo": ("get", "/stats/{campaign}/export/dpo.jsonl", only(*STAFF)),
    "campaign_answers": ("get", "/stats/{campaign}/answers/", only(*STAFF)),
    "statistics_snapshot_create": ("post", "/stats/{campaign}/snapshots/new/", only(*STAFF, status=302)),
    "statistics_snapshots_live": ("get", "/stats/{campaign}/snapshots/", only(*STAFF)),  # one queued: polling
    "statistics_snapshot_download": ("get", "/stats/{campaign}/snapshots/{snapshot}.json", only(*STAFF, status=409)),
    "api_campaigns": ("get", "/api/campaigns/", only(*STAFF, **API)),
    "api_statistics": ("get", "/api/campaigns/{campaign}/statistics/", only(*STAFF, **API)),
    "api_judgements": ("get", "/api/campaigns/{campaign}/judgements.csv", only(*STAFF, **API)),
    "api_statistics_download": ("get", "/api/campaigns/{campaign}/statistics.json", only(*STAFF, **API)),
    "api_dpo": ("get", "/api/campaigns/{campaign}/dpo.jsonl", only(*STAFF, **API)),
    "api_schema": ("get", "/api/schema/", only(*STAFF, **API)),  # the OpenAPI description, for the API's users
    "review_index": ("get", "/review/", only(*STAFF)),
    "review_flag_decide": ("post", "/review/flags/0/decide/", only(*STAFF, status=404)),  # no such flag
    "review_skip_decide": ("post", "/review/skips/{assignment}/decide/", only(*STAFF, status=404)),  # not skipped
    "review_items_download": ("get", "/review/campaigns/{campaign}/review.csv", only(*STAFF)),
    "adjudication_queue": ("get", "/review/campaigns/{campaign}/adjudication/", only(*STAFF)),
    "comparison_review": ("get", "/review/campaigns/{campaign}/comparisons/{comparison}/", only(*STAFF)),
    # No outcome chosen: refused with its message on the comparison's page, nothing recorded.
    "adjudication_record": (
        "post",
        "/review/campaigns/{campaign}/comparisons/{comparison}/adjudicate/",
        only(*STAFF, status="/review/campaigns/"),
    ),
    "manage": ("get", "/manage/", only("admin")),
    # Empty forms below: each is refused with its message (a redirect back), so nothing is written.
    "campaign_create": ("post", "/manage/campaigns/new/", only("admin", status="/manage/")),
    "variant_export_download": ("get", "/manage/exports/0/download/", only("admin", status=404)),  # no such export
    "variant_create": ("post", "/manage/variants/new/", only("admin", status="/manage/")),
    "campaign_detail": ("get", "/manage/campaigns/{campaign}/", only("admin")),
    "campaign_update": ("post", "/manage/campaigns/{campaign}/settings/", only("admin", status=302)),
    "campaign_state": ("post", "/manage/campaigns/{campaign}/state/", only("admin", status=302)),  # no state
    "campaign_member_add": ("post", "/manage/campaigns/{campaign}/members/", only("admin", status=302)),  # nobody
    "campaign_member_remove": (
        "post",
        "/manage/campaigns/{campaign}/members/0/remove/",  # no such member
        only("admin", status=302),
    ),
    "prompts_import": ("post", "/manage/campaigns/{campaign}/prompts/", only("admin", status=302)),
    "generation_queue": ("post", "/manage/campaigns/{campaign}/generate/", only("admin", status=302)),
    "generation_jobs_live": ("get", "/manage/campaigns/{campaign}/generation/", only("admin", status=286)),
    "campaign_counts_live": ("get", "/manage/campaigns/{campaign}/counts/", only("admin")),
    "retrain_power": ("get", "/manage/campaigns/{campaign}/retrain/power/", only("admin")),
    # The retrain page: a refused form comes back on it, with its values and errors.
    "training_queue": ("post", "/manage/campaigns/{campaign}/retrain/", only("admin", status=200)),
    "training_job_detail": ("get", "/manage/jobs/{job}/", only("admin")),
    "training_job_cancel": ("post", "/manage/jobs/{job}/cancel/", only("admin", status=302)),  # it has ended
    "training_job_resume": ("post", "/manage/jobs/{job}/resume/", only("admin", status=302)),  # it succeeded
    "variant_tree": ("get", "/manage/variants/", only("admin")),
    "variant_export": ("post", "/manage/variants/{variant}/export/", only("admin", status=302)),  # no adapter
    "variant_detail": ("get", "/manage/variants/{variant}/", only("admin")),
    "variant_rename": ("post", "/manage/variants/{variant}/rename/", only("admin", status=302)),  # no name
    "variant_settings_update": ("post", "/manage/variants/{variant}/settings/", only("admin", status=302)),
    "variant_archive": ("post", "/manage/variants/{variant}/archive/", only("admin", status=302)),  # no action
    "collections": ("get", "/manage/collections/", only("admin")),
    "collection_create": ("post", "/manage/collections/new/", only("admin", status=302)),
    "collection_detail": ("get", "/manage/collections/{collection}/", only("admin")),
    "collection_upload": ("post", "/manage/collections/{collection}/documents/", only("admin", status=302)),
    "campaign_quality": ("get", "/manage/campaigns/{campaign}/quality/", only("admin")),
    "annotator_flag": ("post", "/manage/campaigns/{campaign}/quality/{annotator}/flag/", only("admin", status=302)),
    "annotator_unflag": (
        "post",
        "/manage/campaigns/{campaign}/quality/{annotator}/unflag/",
        only("admin", status=302),
    ),
    "workers": ("get", "/manage/workers/", only("admin")),  # waits 1 s for the workers to answer
    "users": ("get", "/manage/users/", only("admin")),
    "user_create": ("post", "/manage/users/new/", only("admin", status=302)),
    "user_roles_update": ("post", "/manage/users/{annotator}/roles/", only("admin", status=302)),  # no roles
    "user_deactivate": ("post", "/manage/users/{admin}/deactivate/", only("admin", status=302)),  # not oneself
    "user_reactivate": ("post", "/manage/users/{admin}/reactivate/", only("admin", status=302)),  # active: no-op
    "qa_sets": ("get", "/manage/qa/", only("admin")),
    "qa_set_create": ("post", "/manage/qa/new/", only("admin", status="/manage/qa/")),
    "qa_set_detail": ("get", "/manage/qa/{qa_set}/", only("admin")),
    "qa_pair_update": ("post", "/manage/qa/{qa_set}/pairs/{qa_pair}/", only("admin", status=302)),
    "qa_set_to_campaign": ("post", "/manage/qa/{qa_set}/to-campaign/", only("admin", status=302)),
    "qa_set_download": ("get", "/manage/qa/{qa_set}/approved.jsonl", only("admin", status=409)),  # none approved
    "judges": ("get", "/manage/judges/", only("admin")),
    "judge_new": ("post", "/manage/judges/new/", only("admin", status=200)),  # an empty form comes back refused
    "judge_detail": ("get", "/manage/judges/0/", only("admin", status=404)),  # no such judge
    "judge_job_create": ("post", "/manage/judges/0/run/", only("admin", status=404)),
    "judge_job_detail": ("get", "/manage/judge-jobs/0/", only("admin", status=404)),  # no such job
    "judge_job_stop": ("post", "/manage/judge-jobs/0/cancel/", only("admin", status=404)),
    "judge_job_restart": ("post", "/manage/judge-jobs/0/resume/", only("admin", status=404)),
    "judge_calibration": ("get", "/stats/{campaign}/judges/0/", only(*STAFF, status=404)),
}
# Bodies for the posts that an empty form would let through: a bad filter queues no snapshot.
POSTED = {"statistics_snapshot_create": {"since": "not a date"}}


def _url_names(resolver: URLResolver, namespace: str = "") -> Iterator[str]:
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _url_names(pattern, f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace)
        else:
            yield f"{namespace}{pattern.name or pattern.pattern}"


def test_every_url_pattern_has_a_row_in_the_access_matrix() -> None:
    # The Django admin's own pages are one guard (staff only): test_the_django_admin_lets_in_only_staff.
    names = {name for name in _url_names(get_resolver()) if not name.startswith("admin:")}
    assert names - set(ACCESS) == set(), "add these pages to ACCESS"
    assert set(ACCESS) - names == set(), "these rows name no page"


@pytest.mark.parametrize("name", list(ACCESS))
def test_each_page_lets_in_only_its_roles(client, name, annotator, researcher, admin_user, outsider) -> None:
    method, url, expected = ACCESS[name]
    campaign = factories.campaign()
    task = factories.assignment(factories.comparison(campaign), annotator)
    variant = task.comparison.variant_a
    job = TrainingJob.objects.create(campaign=campaign, parent_variant=variant, status=JobStatus.SUCCEEDED)
    collection = DocumentCollection.objects.create(name="Notes")
    snapshot = StatisticsSnapshot.objects.create(campaign=campaign)
    qa_set = QASet.objects.create(collection=collection, variant=variant)
    qa_pair = QAPair.objects.create(qa_set=qa_set, document="d", chunk_index=0, context="C", question="Q?", answer="A")
    url = url.format(
        token=task.token,
        campaign=campaign.pk,
        annotator=annotator.pk,
        admin=admin_user.pk,
        variant=variant.pk,
        job=job.pk,
        collection=collection.pk,
        snapshot=snapshot.pk,
        qa_set=qa_set.pk,
        qa_pair=qa_pair.pk,
        assignment=task.pk,
        comparison=task.comparison_id,
    )
    assert resolve(urlsplit(url).path).view_name == name
    fetch = getattr(client, method)
    users = {"annotator": annotator, "researcher": researcher, "admin": admin_user, "outsider": outsider}
    for role in ROLES:
        client.logout()
        if role in users:
            client.force_login(users[role])
        response = fetch(url, POSTED.get(name, {}))
        want = expected[role]
        got = (response.status_code, response.get("Location", ""))
        if isinstance(want, str):
            assert got[0] == 302 and got[1].startswith(want), (url, role, got)
        else:
            assert got[0] == want, (url, role, got)
    # Nothing written: every allowed request above was refused as incomplete, but for the token rotation.
    assert not Judgement.objects.exists() and not Assignment.objects.filter(skipped_at__isnull=False).exists()
    assert not AnswerFlag.objects.exists() and not AnnotatorFlag.objects.exists()
    assert not ReviewResolution.objects.exists() and not Adjudication.objects.exists()
    assert get_user_model().objects.count() == 4 and get_user_model().objects.filter(is_active=True).count() == 4
    assert set(annotator.groups.values_list("name", flat=True)) == {"annotator"}
    assert Campaign.objects.count() == 1 and ModelVariant.objects.count() == 2
    assert not ModelVariant.objects.filter(archived_at__isnull=False).exists()
    assert ModelVariant.objects.get(pk=variant.pk).name == variant.name
    assert ModelVariant.objects.get(pk=variant.pk).generation_settings == variant.generation_settings
    assert Campaign.objects.get().state == "active" and CampaignMember.objects.count() == 1
    assert TrainingJob.objects.get().status == JobStatus.SUCCEEDED and not GenerationJob.objects.exists()
    assert not ModelExport.objects.exists() and not Document.objects.exists()
    assert DocumentCollection.objects.count() == 1 and StatisticsSnapshot.objects.count() == 1
    assert set(Token.objects.values_list("user__username", flat=True)) <= {"rex", "ada"}
    assert QASet.objects.get() == qa_set and not Prompt.objects.filter(external_id__startswith="qa-").exists()
    assert QAPair.objects.filter(pk=qa_pair.pk, status="pending", reviewed_by=None).exists()


def test_the_django_admin_lets_in_only_staff(client, annotator, researcher, admin_user, outsider) -> None:
    # Accounts given the admin role are staff (evaluator/services/accounts.py) and hold every permission on Prefloop's
    # models, not on users and groups: those pages stay with superusers.
    admin_user.is_staff = True
    admin_user.save(update_fields=["is_staff"])
    campaign = factories.campaign()
    pages = ["/django-admin/", f"/django-admin/evaluator/campaign/{campaign.pk}/change/"]
    pages += [reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in site._registry]
    root = get_user_model().objects.create_superuser("root", password=factories.PASSWORD)
    for user in (None, annotator, researcher, outsider, admin_user, root):
        client.logout()
        if user:
            client.force_login(user)
        for page in pages:
            response = client.get(page)
            if user is None or not user.is_staff:
                assert response.status_code == 302, (page, user)
                assert response["Location"].startswith("/django-admin/login/"), (page, user)
            elif user.is_superuser:
                assert response.status_code == 200, (page, user)
            else:
                own_model = page == "/django-admin/" or page.startswith("/django-admin/evaluator/")
                assert response.status_code == (200 if own_model else 403), (page, user)


def test_the_health_check_answers_anyone_with_ok_and_no_query(client, django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert (response.status_code, response.content, response["Content-Type"]) == (200, b"ok", "text/plain")
