"""Reviewing flagged answers and skipped pairs: the list and its filters, decisions with their audit trail, the
Django admin, and the exports that carry flags, skips and "both bad"."""

import csv
import io
import json
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import AnswerFlag, CriterionChoice, ReviewResolution, ReviewStatus
from evaluator.selectors.exports import RAW_COLUMNS, judgements_csv, judgements_jsonl, judgements_parquet
from evaluator.selectors.review import (
    REVIEW_COLUMNS,
    ReviewFilters,
    review_items_export,
    review_items_page,
    review_open_counts,
)
from evaluator.services.rating import answer_flag, assignment_skip
from evaluator.services.review import answer_flag_resolve, skipped_pair_resolve
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed(annotator, second_annotator):
    """A campaign with one flagged answer (on variant b's answer, shown left), one skipped pair, and a second
    campaign with one flag of its own."""
    campaign = factories.campaign(name="Reviewed", allow_both_bad=True)
    flagged = factories.comparison(campaign)
    task = factories.assignment(flagged, annotator, left_is_a=False)
    flag = answer_flag(token=str(task.token), annotator=annotator, side="left", reason="unsafe", note="dosage advice")
    skipped = factories.comparison(campaign)
    skip = assignment_skip(
        token=str(factories.assignment(skipped, second_annotator).token),
        annotator=second_annotator,
        reason="I cannot judge medicine",
    )
    other = factories.campaign(name="Other")
    other_task = factories.assignment(factories.comparison(other), annotator)
    other_flag = answer_flag(token=str(other_task.token), annotator=annotator, side="right", reason="broken")
    return {"campaign": campaign, "flag": flag, "skip": skip, "other": other, "other_flag": other_flag}


def listed(filters: ReviewFilters) -> list[tuple[str, int]]:
    return [(row["kind"], row["item"].pk) for row in review_items_page(filters=filters, page_number=1)]


def test_the_review_list_holds_flags_and_skips_newest_first_and_filters_them(reviewed, researcher) -> None:
    flag, skip, other_flag = reviewed["flag"], reviewed["skip"], reviewed["other_flag"]
    assert listed(ReviewFilters()) == [("flag", other_flag.pk), ("skip", skip.pk), ("flag", flag.pk)]
    campaign = reviewed["campaign"].pk
    assert listed(ReviewFilters(campaign_id=campaign)) == [("skip", skip.pk), ("flag", flag.pk)]
    assert listed(ReviewFilters(campaign_id=campaign, kind="flag")) == [("flag", flag.pk)]
    assert listed(ReviewFilters(kind="skip")) == [("skip", skip.pk)]
    # A flag reason asks for flags only: skips carry free text, no reason from the list.
    assert listed(ReviewFilters(reason="broken")) == [("flag", other_flag.pk)]

    answer_flag_resolve(flag=flag, status="resolved", note="answer removed from the set", by=researcher)
    skipped_pair_resolve(assignment=skip, status="dismissed", note="a topic gap, nothing wrong", by=researcher)
    assert listed(ReviewFilters(campaign_id=campaign)) == []  # open is the default
    assert listed(ReviewFilters(state="resolved")) == [("flag", flag.pk)]
    assert listed(ReviewFilters(state="dismissed")) == [("skip", skip.pk)]
    assert len(listed(ReviewFilters(state="all"))) == 3
    assert review_open_counts() == {"flags": 1, "skips": 0}


def test_a_decision_records_who_when_and_why_and_the_item_leaves_the_open_list(reviewed, researcher) -> None:
    moment = timezone.now() - timedelta(minutes=5)
    decision = answer_flag_resolve(
        flag=reviewed["flag"], status="resolved", note="  prompt rewritten  ", by=researcher, now=moment
    )
    stored = ReviewResolution.objects.get(answer_flag=reviewed["flag"])
    assert stored == decision
    assert (stored.status, stored.note, stored.resolved_by, stored.resolved_at) == (
        ReviewStatus.RESOLVED,
        "prompt rewritten",
        researcher,
        moment,
    )
    assert stored.skipped_assignment is None


def test_a_second_decision_on_the_same_item_is_refused_naming_the_first(reviewed, researcher, admin_user) -> None:
    answer_flag_resolve(flag=reviewed["flag"], status="dismissed", note="fine as it is", by=researcher)
    with pytest.raises(ServiceError, match=r"rex already marked this dismissed at .* \(“fine as it is”\)"):
        answer_flag_resolve(flag=reviewed["flag"], status="resolved", note="removed", by=admin_user)
    assert ReviewResolution.objects.count() == 1
    assert ReviewResolution.objects.get().resolved_by == researcher


@pytest.mark.parametrize(
    ("status", "note", "message"),
    [
        ("resolved", "   ", "Write a note"),
        ("approved", "ok", "one of resolved, dismissed, not 'approved'"),
        ("resolved", "x" * 1001, "1001 characters long; at most 1000"),
    ],
)
def test_a_bad_decision_is_refused_and_stores_nothing(reviewed, researcher, status, note, message) -> None:
    with pytest.raises(ServiceError, match=message):
        answer_flag_resolve(flag=reviewed["flag"], status=status, note=note, by=researcher)
    assert not ReviewResolution.objects.exists()


def test_a_pair_that_was_not_skipped_cannot_be_resolved_as_a_skip(reviewed, researcher, annotator) -> None:
    task = reviewed["flag"].assignment
    with pytest.raises(ServiceError, match="was not skipped"):
        skipped_pair_resolve(assignment=task, status="resolved", note="?", by=researcher)
    assert not ReviewResolution.objects.exists()


def test_the_database_holds_one_decision_per_item_naming_exactly_one_item(reviewed, researcher) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        ReviewResolution.objects.create(
            answer_flag=reviewed["flag"],
            skipped_assignment=reviewed["skip"],
            status="resolved",
            note="both",
            resolved_by=researcher,
        )
    for bad in ({"status": "open", "note": "n"}, {"status": "resolved", "note": ""}):
        with pytest.raises(IntegrityError), transaction.atomic():
            ReviewResolution.objects.create(answer_flag=reviewed["flag"], resolved_by=researcher, **bad)
    ReviewResolution.objects.create(answer_flag=reviewed["flag"], status="resolved", note="n", resolved_by=researcher)
    with pytest.raises(IntegrityError), transaction.atomic():
        ReviewResolution.objects.create(
            answer_flag=reviewed["flag"], status="dismissed", note="n", resolved_by=researcher
        )


def test_the_review_page_lists_items_in_a_fixed_number_of_queries(
    client, reviewed, researcher, annotator, django_assert_num_queries
) -> None:
    client.force_login(researcher)
    campaign = reviewed["campaign"]
    for _ in range(5):
        task = factories.assignment(factories.comparison(campaign), annotator)
        answer_flag(token=str(task.token), annotator=annotator, side="right", reason="identity")
    # Session, the user with their roles, two open counts, the page's count and keys, its flags and skips, the
    # campaigns of the filter and of the adjudication list.
    with django_assert_num_queries(10):
        response = client.get("/review/", {"state": "all"})
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('class="review-item flag"') == 7 and page.count('class="review-item skip"') == 1
    assert "dosage advice" in page and "I cannot judge medicine" in page and "Leaks which model wrote it" in page


def test_resolving_on_the_page_swaps_the_row_and_an_empty_note_is_refused(client, reviewed, researcher) -> None:
    client.force_login(researcher)
    flag = reviewed["flag"]
    url = f"/review/flags/{flag.pk}/decide/"
    refused = client.post(url, {"status": "resolved", "note": ""}, headers={"HX-Request": "true"})
    assert refused.status_code == 400 and "Nothing recorded" in refused.content.decode()
    assert not ReviewResolution.objects.exists()
    done = client.post(url, {"status": "resolved", "note": "removed"}, headers={"HX-Request": "true"})
    assert done.status_code == 200
    assert f'id="flag-{flag.pk}"' in done.content.decode() and "by rex" in done.content.decode()
    again = client.post(url, {"status": "dismissed", "note": "no"}, follow=True)
    assert "rex already marked this resolved" in again.content.decode()

    skip = reviewed["skip"]
    back = client.post(
        f"/review/skips/{skip.pk}/decide/", {"status": "dismissed", "note": "ok", "next": "/review/?kind=skip"}
    )
    assert back.status_code == 302 and back["Location"] == "/review/?kind=skip"
    assert ReviewResolution.objects.get(skipped_assignment=skip).status == "dismissed"


def test_the_review_export_has_flags_and_skips_with_their_decisions(reviewed, researcher) -> None:
    skipped_pair_resolve(assignment=reviewed["skip"], status="dismissed", note="topic gap", by=researcher)
    rows = list(
        csv.DictReader(
            io.StringIO(b"".join(review_items_export(campaign=reviewed["campaign"], file_format="csv")).decode())
        )
    )
    assert [row["kind"] for row in rows] == ["flag", "skip"]
    flag_row, skip_row = rows
    flag = reviewed["flag"]
    assert flag_row["side"] == "b" and flag_row["variant"] == flag.candidate.variant.name  # shown left, variant b
    assert (flag_row["reason"], flag_row["note"], flag_row["status"], flag_row["annotator"]) == (
        "unsafe",
        "dosage advice",
        "open",
        "ann",
    )
    assert (skip_row["reason"], skip_row["status"], skip_row["resolved_by"], skip_row["resolution_note"]) == (
        "I cannot judge medicine",
        "dismissed",
        "rex",
        "topic gap",
    )
    lines = b"".join(review_items_export(campaign=reviewed["campaign"], file_format="jsonl")).decode().splitlines()
    assert list(json.loads(lines[0])) == REVIEW_COLUMNS
    table = pq.read_table(
        pa.BufferReader(b"".join(review_items_export(campaign=reviewed["campaign"], file_format="parquet")))
    )
    assert table.column_names == REVIEW_COLUMNS and table.num_rows == 2
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        list(review_items_export(campaign=reviewed["campaign"], file_format="xml"))


def test_the_raw_exports_carry_both_bad_flags_by_variant_and_the_adjudicated_outcome(
    reviewed, annotator, second_annotator, researcher
) -> None:
    from evaluator.services.review import comparison_adjudicate

    flag = reviewed["flag"]
    comparison = flag.assignment.comparison
    # The flagged assignment is completed with a "both bad" overall, and a second annotator disagrees.
    task = flag.assignment
    judged = factories.judgement(comparison, second_annotator, "a")
    first = judged.__class__.objects.create(
        assignment=task, comparison=comparison, annotator=annotator, time_on_task_ms=10
    )
    task.completed_at = timezone.now()
    task.save(update_fields=["completed_at"])
    CriterionChoice.objects.bulk_create(
        CriterionChoice(judgement=first, criterion=slug, outcome="tie", both_bad=slug == "overall")
        for slug in comparison.campaign.criterion_slugs
    )
    comparison_adjudicate(comparison=comparison, outcomes={"overall": "b"}, by=researcher)

    rows = list(csv.DictReader(io.StringIO(b"".join(judgements_csv(campaign=reviewed["campaign"])).decode())))
    assert list(rows[0]) == RAW_COLUMNS
    mine = {row["criterion"]: row for row in rows if row["annotator"] == "ann"}
    theirs = {row["criterion"]: row for row in rows if row["annotator"] == "bea"}
    assert mine["overall"]["both_bad"] == "true" and mine["safety"]["both_bad"] == "false"
    assert json.loads(mine["overall"]["flags_b"]) == [{"reason": "unsafe", "note": "dosage advice"}]
    assert json.loads(mine["overall"]["flags_a"]) == [] and json.loads(theirs["overall"]["flags_b"]) == []
    assert mine["overall"]["adjudicated"] == theirs["overall"]["adjudicated"] == "b"
    assert mine["safety"]["adjudicated"] == ""  # CSV's empty cell for "not adjudicated"

    records = [json.loads(line) for line in b"".join(judgements_jsonl(campaign=reviewed["campaign"])).splitlines()]
    overall = next(r for r in records if r["annotator"] == "ann" and r["criterion"] == "overall")
    assert overall["both_bad"] is True and overall["adjudicated"] == "b"
    assert next(r for r in records if r["criterion"] == "safety")["adjudicated"] is None
    table = pq.read_table(pa.BufferReader(b"".join(judgements_parquet(campaign=reviewed["campaign"]))))
    assert table.schema.field("both_bad").type == pa.bool_() and table.column_names == RAW_COLUMNS


def test_the_django_admin_lists_flags_skips_both_bad_and_decisions(client, reviewed, researcher) -> None:
    admin_client = client
    admin_client.force_login(get_user_model().objects.create_superuser("root", password=factories.PASSWORD))
    answer_flag_resolve(flag=reviewed["flag"], status="resolved", note="removed", by=researcher)
    flags = admin_client.get("/django-admin/evaluator/answerflag/").content.decode()
    assert "dosage advice" in flags and "resolved" in flags and "Reviewed" in flags
    flag_page = admin_client.get(f"/django-admin/evaluator/answerflag/{reviewed['flag'].pk}/change/").content.decode()
    assert "removed" in flag_page and "rex" in flag_page
    skips = admin_client.get("/django-admin/evaluator/assignment/", {"skipped": "yes"}).content.decode()
    assert "I cannot judge medicine" in skips
    assert admin_client.get("/django-admin/evaluator/judgement/", {"both_bad": "yes"}).status_code == 200
    assert admin_client.get("/django-admin/evaluator/reviewresolution/").status_code == 200
    assert admin_client.get("/django-admin/evaluator/adjudication/").status_code == 200
    assert AnswerFlag.objects.count() == 2
