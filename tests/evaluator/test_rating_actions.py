"""Skipping a pair, flagging an answer, "both bad", and what the rating page shows from the campaign's settings."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import AnswerFlag, Assignment, CriterionChoice, Judgement, Prompt
from evaluator.services.rating import answer_flag, assignment_next, assignment_skip, judgement_submit
from tests import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def all_sides(campaign, side: str) -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


# Skipping --------------------------------------------------------------------------------------------------


def test_a_skip_releases_the_slot_at_once_and_keeps_the_reason(annotator) -> None:
    campaign = factories.campaign(overlap=1)
    comparison = factories.comparison(campaign)
    task = assignment_next(annotator=annotator)
    comparison.refresh_from_db()
    assert comparison.live_assignments == 1

    skipped = assignment_skip(token=str(task.token), annotator=annotator, reason="  Not my field  ")

    task.refresh_from_db()
    comparison.refresh_from_db()
    assert (task.skip_reason, task.released, task.completed_at) == ("Not my field", True, None)
    assert task.skipped_at is not None and skipped.pk == task.pk
    assert comparison.live_assignments == 0
    newcomer = factories.user("newcomer", "annotator")
    assert assignment_next(annotator=newcomer).comparison_id == comparison.pk  # back in the pool


def test_a_skipped_pair_never_comes_back_to_the_annotator(annotator) -> None:
    campaign = factories.campaign(overlap=3)
    only = factories.comparison(campaign)
    task = assignment_next(annotator=annotator)
    assignment_skip(token=str(task.token), annotator=annotator, reason="Unclear prompt")
    assert assignment_next(annotator=annotator) is None
    assert assignment_next(annotator=annotator, now=timezone.now() + timedelta(days=2)) is None
    assert Assignment.objects.filter(comparison=only, annotator=annotator).count() == 1


def test_a_skip_does_not_count_against_the_quota(annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=1)
    factories.comparison(campaign)
    factories.comparison(campaign)
    first = assignment_next(annotator=annotator)
    assignment_skip(token=str(first.token), annotator=annotator, reason="Cannot judge")
    second = assignment_next(annotator=annotator)
    assert second is not None and second.comparison_id != first.comparison_id
    judgement_submit(token=str(second.token), annotator=annotator, choices=all_sides(campaign, "tie"))
    assert assignment_next(annotator=annotator) is None  # one rated = the quota


def test_a_repeated_skip_changes_nothing(annotator) -> None:
    campaign = factories.campaign()
    task = factories.assignment(factories.comparison(campaign), annotator)
    first = assignment_skip(token=str(task.token), annotator=annotator, reason="first reason")
    again = assignment_skip(token=str(task.token), annotator=annotator, reason="second reason")
    assert again.skipped_at == first.skipped_at and again.skip_reason == "first reason"


@pytest.mark.parametrize(("reason", "message"), [("   ", "Say why"), ("x" * 501, "501 characters")])
def test_a_skip_without_a_usable_reason_is_refused_and_writes_nothing(annotator, reason, message) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    with pytest.raises(ServiceError, match=message):
        assignment_skip(token=str(task.token), annotator=annotator, reason=reason)
    task.refresh_from_db()
    assert (task.skipped_at, task.skip_reason, task.released) == (None, "", False)


def test_another_annotators_skip_is_refused(annotator, second_annotator) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    with pytest.raises(PermissionDenied):
        assignment_skip(token=str(task.token), annotator=second_annotator, reason="mine now")
    task.refresh_from_db()
    assert task.skipped_at is None


def test_a_rated_pair_cannot_be_skipped_and_a_skipped_pair_cannot_be_rated(annotator) -> None:
    campaign = factories.campaign()
    rated = factories.assignment(factories.comparison(campaign), annotator)
    judgement_submit(token=str(rated.token), annotator=annotator, choices=all_sides(campaign, "left"))
    with pytest.raises(ServiceError, match="already rated"):
        assignment_skip(token=str(rated.token), annotator=annotator, reason="too late")

    skipped = factories.assignment(factories.comparison(campaign), annotator)
    assignment_skip(token=str(skipped.token), annotator=annotator, reason="skip it")
    with pytest.raises(ServiceError, match="skipped"):
        judgement_submit(token=str(skipped.token), annotator=annotator, choices=all_sides(campaign, "left"))
    assert Judgement.objects.count() == 1


def test_an_htmx_skip_returns_the_next_pair_and_a_plain_one_redirects(client, annotator) -> None:
    campaign = factories.campaign(overlap=1)
    factories.comparison(campaign, texts=("first a", "first b"))
    factories.comparison(campaign, texts=("second a", "second b"))
    client.force_login(annotator)
    client.get(reverse("rate"))
    first = Assignment.objects.get()

    response = client.post(reverse("rate_skip", args=[first.token]), {"reason": "No idea"}, **HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    second = Assignment.objects.exclude(pk=first.pk).get()
    assert "<html" not in html and str(second.token) in html and str(first.token) not in html
    assert "0 rated" in html
    response = client.post(reverse("rate_skip", args=[second.token]), {"reason": "Still no idea"})
    assert response.status_code == 302 and response["Location"] == reverse("rate")
    assert Assignment.objects.filter(skipped_at__isnull=False).count() == 2


def test_an_htmx_skip_without_a_reason_shows_the_same_pair_with_the_problem(client, annotator) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    client.force_login(annotator)
    response = client.post(reverse("rate_skip", args=[task.token]), {"reason": ""}, **HTMX)
    assert response.status_code == 400
    html = response.content.decode()
    assert str(task.token) in html and "This field is required." in html
    assert '<details class="card skip" id="skip" open>' in html
    task.refresh_from_db()
    assert task.skipped_at is None


# Flagging --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "left_is_a", "flagged"), [("left", True, "a"), ("left", False, "b"), ("right", True, "b")]
)
def test_a_flag_names_the_answer_shown_on_that_side(annotator, side, left_is_a, flagged) -> None:
    comparison = factories.comparison(factories.campaign())
    task = factories.assignment(comparison, annotator, left_is_a=left_is_a)
    flag = answer_flag(token=str(task.token), annotator=annotator, side=side, reason="unsafe", note=" why ")
    expected = comparison.candidate_a if flagged == "a" else comparison.candidate_b
    assert (flag.candidate, flag.reason, flag.note, flag.assignment) == (expected, "unsafe", "why", task)


def test_a_repeated_flag_is_stored_once_and_other_reasons_add_flags(annotator) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    token = str(task.token)
    first = answer_flag(token=token, annotator=annotator, side="left", reason="broken", note="cut off")
    again = answer_flag(token=token, annotator=annotator, side="left", reason="broken", note="other note")
    answer_flag(token=token, annotator=annotator, side="left", reason="identity", note="")
    assert again.pk == first.pk and again.note == "cut off"
    assert AnswerFlag.objects.count() == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"side": "middle", "reason": "unsafe"}, "Side must be left or right"),
        ({"side": "left", "reason": "boring"}, "Reason must be one of"),
        ({"side": "left", "reason": "other", "note": "n" * 1001}, "1001 characters"),
    ],
)
def test_a_bad_flag_is_refused_with_the_problem_named(annotator, fields, message) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    with pytest.raises(ServiceError, match=message):
        answer_flag(token=str(task.token), annotator=annotator, **fields)
    assert not AnswerFlag.objects.exists()


def test_another_annotators_flag_is_refused(annotator, second_annotator) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    with pytest.raises(PermissionDenied):
        answer_flag(token=str(task.token), annotator=second_annotator, side="left", reason="unsafe")
    assert not AnswerFlag.objects.exists()


def test_an_htmx_flag_returns_a_confirmation_without_leaving_the_pair(client, annotator) -> None:
    task = factories.assignment(factories.comparison(factories.campaign()), annotator)
    client.force_login(annotator)
    url = reverse("rate_flag", args=[task.token])

    response = client.post(url, {"side": "right", "reason": "identity"}, **HTMX)
    assert response.status_code == 200
    assert (
        response.content.decode().strip() == "Flagged as “Leaks which model wrote it”. Thank you: it will be reviewed."
    )
    refused = client.post(url, {"side": "right", "reason": "other", "note": ""}, **HTMX)
    assert refused.status_code == 400 and "Note: Say what is wrong with the answer." in refused.content.decode()
    plain = client.post(url, {"side": "left", "reason": "unsafe"})
    assert plain.status_code == 302 and plain["Location"] == reverse("rate")
    assert sorted(AnswerFlag.objects.values_list("reason", flat=True)) == ["identity", "unsafe"]
    task.refresh_from_db()
    assert task.completed_at is None and task.skipped_at is None


# Both bad --------------------------------------------------------------------------------------------------


def test_both_bad_is_stored_as_a_marked_tie_where_the_campaign_allows_it(client, annotator) -> None:
    campaign = factories.campaign(allow_both_bad=True)
    task = factories.assignment(factories.comparison(campaign), annotator, left_is_a=False)
    client.force_login(annotator)
    choices = {**all_sides(campaign, "left"), "safety": "both_bad", "overall": "both_bad"}
    response = client.post(reverse("rate_submit", args=[task.token]), choices)
    assert response.status_code == 302
    stored = {row.criterion: (row.outcome, row.both_bad) for row in CriterionChoice.objects.all()}
    assert stored["safety"] == stored["overall"] == ("tie", True)
    assert stored["relevance"] == ("b", False)


def test_both_bad_is_refused_where_the_campaign_does_not_offer_it(client, annotator) -> None:
    campaign = factories.campaign()
    task = factories.assignment(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    page = client.get(reverse("rate")).content.decode()
    assert "both_bad" not in page and "Both bad" not in page
    response = client.post(
        reverse("rate_submit", args=[task.token]), {**all_sides(campaign, "left"), "overall": "both_bad"}
    )
    assert response.status_code == 400
    with pytest.raises(ServiceError, match="left, right or tie"):
        judgement_submit(
            token=str(task.token), annotator=annotator, choices={**all_sides(campaign, "tie"), "safety": "both_bad"}
        )
    assert not Judgement.objects.exists()


# What the page shows ---------------------------------------------------------------------------------------


def test_the_page_offers_both_bad_with_its_shortcut_and_sanitized_guidelines(client, annotator) -> None:
    campaign = factories.campaign(allow_both_bad=True, guidelines="Prefer **short** answers.\n\n<b onclick=x>hi</b>")
    factories.assignment(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    html = client.get(reverse("rate")).content.decode()
    assert '<details class="guidelines card" open>' in html
    assert "Prefer <strong>short</strong> answers." in html and "<b onclick" not in html
    assert html.count('value="both_bad"') == len(campaign.criterion_slugs)
    assert "<kbd>b</kbd> both bad" in html and "<kbd>x</kbd> skips the pair" in html


def test_reference_and_context_show_only_where_the_campaign_says_so(client, annotator) -> None:
    hidden = factories.campaign()
    shown = factories.campaign(show_reference=True)
    for campaign in (hidden, shown):
        comparison = factories.comparison(campaign)
        Prompt.objects.filter(pk=comparison.prompt_id).update(
            reference="The reference *answer*", context="Some context text"
        )
    client.force_login(annotator)
    first = client.get(reverse("rate")).content.decode()  # the oldest campaign first: hidden
    assert "Reference answer" not in first and "The reference" not in first and "Some context text" not in first
    assignment_skip(token=str(Assignment.objects.get().token), annotator=annotator, reason="next")
    second = client.get(reverse("rate")).content.decode()
    assert "Reference answer" in second and "The reference <em>answer</em>" in second
    assert "Context given with the prompt" in second and "Some context text" in second


def test_retrieved_passages_show_once_above_both_answers_with_the_document_name_only(client, annotator) -> None:
    campaign = factories.campaign(show_retrieved=True)
    comparison = factories.comparison(campaign, texts=("rag answer", "plain answer"))
    comparison.candidate_a.retrieved = [
        {"document": "archive-guide.pdf", "chunk": 4417, "text": "Acid-free **boxes** help.", "score": 0.8123},
        "not a passage",
    ]
    comparison.candidate_a.save(update_fields=["retrieved"])
    factories.assignment(comparison, annotator, left_is_a=True)
    client.force_login(annotator)
    html = client.get(reverse("rate")).content.decode()
    assert "Passages retrieved for this question (1)" in html and "Retrieved passages" not in html
    assert "archive-guide.pdf" in html and "Acid-free <strong>boxes</strong> help." in html
    assert "4417" not in html and "0.8123" not in html
    above, answers = html.split('<section class="answers">')
    assert "Acid-free" in above and "Acid-free" not in answers  # under neither answer


def test_passages_both_answers_were_given_are_shown_once_in_an_order_that_names_neither(client, annotator) -> None:
    campaign = factories.campaign(show_retrieved=True)
    comparison = factories.comparison(campaign, texts=("first answer", "second answer"))
    shared = {"document": "b.md", "chunk": 1, "text": "Shared passage.", "score": 0.9}
    comparison.candidate_a.retrieved = [shared, {"document": "c.md", "chunk": 2, "text": "Only a's.", "score": 0.5}]
    comparison.candidate_a.save(update_fields=["retrieved"])
    comparison.candidate_b.retrieved = [{"document": "a.md", "chunk": 7, "text": "Only b's.", "score": 0.7}, shared]
    comparison.candidate_b.save(update_fields=["retrieved"])
    factories.assignment(comparison, annotator, left_is_a=False)
    client.force_login(annotator)
    html = client.get(reverse("rate")).content.decode()
    assert "Passages retrieved for this question (3)" in html and html.count("Shared passage.") == 1
    assert html.index("a.md") < html.index("b.md") < html.index("c.md")  # by document, not by answer


def test_the_progress_line_counts_against_the_quota_when_there_is_one(client, annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=50)
    for _ in range(3):
        factories.comparison(campaign)
    factories.judgement(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    assert "1 of your 50 · campaign 25% complete" in client.get(reverse("rate")).content.decode()
