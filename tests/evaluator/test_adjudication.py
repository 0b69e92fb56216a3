"""Adjudication: the queue of comparisons whose judgements disagree under a rule, final outcomes recorded once
(also when two researchers record at the same moment), and the statistics and DPO dataset that can use them."""

import json
import threading
import time

import pandas as pd
import pytest
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from evaluator.errors import ServiceError
from evaluator.forms import StatisticsFilterForm
from evaluator.models import Adjudication
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics, votes_frame
from evaluator.selectors.dpo_dataset import SelectionRules, preference_outcomes_select
from evaluator.selectors.review import (
    AdjudicationRule,
    adjudication_queue_page,
    disputed_comparison_ids,
    votes_adjudicated,
)
from evaluator.services.review import comparison_adjudicate
from tests import factories


@pytest.fixture
def disputed(db, annotator, second_annotator):
    """Three annotators on four comparisons of base vs tuned: `split` 2 a / 1 b on overall (a majority, a
    disagreement), `three_way` a / b / tie (no majority), `agreed` all a, and a gold item split a / b."""
    third = factories.user("cy", "annotator")
    campaign = factories.campaign(name="Disputes", overlap=3)
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned")
    made = {}
    for name, outcomes in {
        "split": ("a", "a", "b"),
        "three_way": ("a", "b", "tie"),
        "agreed": ("a", "a", "a"),
    }.items():
        comparison = factories.comparison(campaign, variants=(base, tuned))
        for person, outcome in zip((annotator, second_annotator, third), outcomes, strict=True):
            # Every criterion but overall is agreed on (a), so only overall can be disputed.
            factories.judgement(comparison, person, {"overall": outcome, "safety": "a"})
        made[name] = comparison
    gold = factories.comparison(campaign, variants=(base, tuned))
    gold.gold_outcome = "a"
    gold.save(update_fields=["gold_outcome"])
    factories.judgement(gold, annotator, {"overall": "a"})
    factories.judgement(gold, second_annotator, {"overall": "b"})
    return {"campaign": campaign, **made, "base": base, "tuned": tuned, "third": third}


def test_the_rule_decides_which_comparisons_are_disputed(disputed) -> None:
    campaign = disputed["campaign"]
    split, three_way = disputed["split"].pk, disputed["three_way"].pk
    assert disputed_comparison_ids(campaign=campaign, rule=AdjudicationRule()) == {
        split: ["overall"],
        three_way: ["overall"],
    }
    assert disputed_comparison_ids(campaign=campaign, rule=AdjudicationRule(rule="no_majority")) == {
        three_way: ["overall"]
    }
    assert disputed_comparison_ids(campaign=campaign, rule=AdjudicationRule(criterion="safety")) == {}
    assert list(disputed_comparison_ids(campaign=campaign, rule=AdjudicationRule(criterion="any"))) == [
        split,
        three_way,
    ]


def test_the_rule_ignores_simulated_judgements_and_needs_two_people(disputed) -> None:
    campaign = disputed["campaign"]
    lone = factories.comparison(campaign)
    factories.judgement(lone, disputed["third"], {"overall": "a"})
    factories.judgement(lone, factories.user("bot", "annotator"), {"overall": "b"}, simulated=True)
    assert lone.pk not in disputed_comparison_ids(campaign=campaign, rule=AdjudicationRule())


def test_the_queue_shows_pending_then_adjudicated_comparisons_with_their_tallies(disputed, researcher) -> None:
    campaign = disputed["campaign"]
    page = adjudication_queue_page(campaign=campaign, rule=AdjudicationRule())
    rows = {row.comparison.pk: row for row in page}
    split = rows[disputed["split"].pk]
    assert split.tallies["overall"] == {"a": 2, "tie": 0, "b": 1} and split.pending == ["overall"]

    comparison_adjudicate(
        comparison=disputed["split"], outcomes={"overall": "a"}, note="b's answer is wrong", by=researcher
    )
    pending = [row.comparison.pk for row in adjudication_queue_page(campaign=campaign, rule=AdjudicationRule())]
    assert pending == [disputed["three_way"].pk]
    done = adjudication_queue_page(campaign=campaign, rule=AdjudicationRule(), shown="adjudicated")
    [row] = list(done)
    assert row.comparison.pk == disputed["split"].pk and row.adjudications["overall"].decided_by == researcher
    assert len(adjudication_queue_page(campaign=campaign, rule=AdjudicationRule(), shown="all").object_list) == 2


def test_an_adjudication_is_stored_per_criterion_with_who_when_and_why(disputed, researcher) -> None:
    rows = comparison_adjudicate(
        comparison=disputed["three_way"], outcomes={"overall": "tie", "safety": "a"}, note=" both fine ", by=researcher
    )
    assert [(row.criterion, row.outcome, row.note, row.decided_by) for row in rows] == [
        ("safety", "a", "both fine", researcher),
        ("overall", "tie", "both fine", researcher),
    ]
    assert Adjudication.objects.filter(comparison=disputed["three_way"]).count() == 2


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        ({}, "at least one criterion"),
        ({"kindness": "a"}, "Unknown criterion 'kindness'"),
        ({"overall": "left"}, "must be one of a, b or tie, not 'left'"),
    ],
)
def test_a_bad_adjudication_is_refused_and_stores_nothing(disputed, researcher, outcomes, message) -> None:
    with pytest.raises(ServiceError, match=message):
        comparison_adjudicate(comparison=disputed["split"], outcomes=outcomes, by=researcher)
    assert not Adjudication.objects.exists()


def test_a_comparison_nobody_judged_cannot_be_adjudicated(disputed, researcher) -> None:
    with pytest.raises(ServiceError, match="Nobody has judged"):
        comparison_adjudicate(
            comparison=factories.comparison(disputed["campaign"]), outcomes={"overall": "a"}, by=researcher
        )


def test_a_second_adjudication_stores_none_of_its_outcomes_and_names_the_first(
    disputed, researcher, admin_user
) -> None:
    comparison_adjudicate(comparison=disputed["split"], outcomes={"overall": "a"}, by=researcher)
    with pytest.raises(ServiceError, match=r"rex already adjudicated Overall of this comparison at .*none of your"):
        comparison_adjudicate(comparison=disputed["split"], outcomes={"safety": "b", "overall": "b"}, by=admin_user)
    assert list(Adjudication.objects.values_list("criterion", "outcome")) == [("overall", "a")]


@pytest.mark.django_db(transaction=True)
def test_two_researchers_adjudicating_at_once_one_wins_and_the_other_is_told(annotator, second_annotator) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the race needs PostgreSQL's row-level locking")
    researcher, other = factories.user("rex", "researcher"), factories.user("ria", "researcher")
    comparison = factories.comparison(factories.campaign())
    factories.judgement(comparison, annotator, {"overall": "a"})
    factories.judgement(comparison, second_annotator, {"overall": "b"})
    first_inserted, results = threading.Event(), {}

    def first() -> None:
        try:
            # Held open after the insert: the second researcher's insert has to wait for this commit.
            with transaction.atomic():
                comparison_adjudicate(comparison=comparison, outcomes={"overall": "a"}, by=researcher)
                first_inserted.set()
                time.sleep(0.5)
            results["first"] = "stored"
        finally:
            first_inserted.set()
            connection.close()

    def second() -> None:
        first_inserted.wait(10)
        started = time.monotonic()
        try:
            comparison_adjudicate(comparison=comparison, outcomes={"overall": "b"}, by=other)
            results["second"] = "stored"
        except ServiceError as error:
            results["second"] = str(error)
        finally:
            results["waited"] = time.monotonic() - started
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results["first"] == "stored"
    assert results["second"].startswith("rex already adjudicated Overall of this comparison at ")
    assert results["waited"] >= 0.3  # it really waited for the first transaction, then lost
    assert list(Adjudication.objects.values_list("outcome", "decided_by__username")) == [("a", "rex")]


def test_adjudicated_votes_keep_their_rows_and_take_the_decided_outcome() -> None:
    votes = pd.DataFrame(
        {"comparison_id": [1, 1, 2, 1], "criterion": ["overall", "overall", "overall", "safety"]}
        | {"outcome": ["a", "b", "b", "tie"]}
    )
    out = votes_adjudicated(votes, {(1, "overall"): "b"})
    assert out["outcome"].tolist() == ["b", "b", "b", "tie"]
    assert votes["outcome"].tolist() == ["a", "b", "b", "tie"]  # the input is not changed
    assert votes_adjudicated(votes, {}) is votes


def overall_wins(campaign, filters) -> tuple[int, int]:
    row = campaign_statistics(campaign=campaign, filters=filters, n_boot=0).pairs.query("criterion == 'overall'")
    return int(row["wins_a"].iloc[0]), int(row["wins_b"].iloc[0])


def test_the_statistics_count_adjudicated_outcomes_when_asked(disputed, researcher) -> None:
    campaign = disputed["campaign"]
    assert overall_wins(campaign, VoteFilters()) == (6, 2)
    comparison_adjudicate(comparison=disputed["split"], outcomes={"overall": "b"}, by=researcher)
    assert overall_wins(campaign, VoteFilters()) == (6, 2)  # the default view: people's judgements
    assert overall_wins(campaign, VoteFilters(adjudicated=True)) == (4, 4)  # split now counts 3 × b
    assert len(votes_frame(campaign=campaign, filters=VoteFilters(adjudicated=True))) == len(
        votes_frame(campaign=campaign, filters=VoteFilters())
    )
    form = StatisticsFilterForm({"adjudicated": "on"})
    assert form.is_valid() and form.vote_filters().adjudicated is True
    assert VoteFilters.from_json(VoteFilters(adjudicated=True).to_json()).adjudicated is True


def test_the_statistics_page_and_its_downloads_take_the_adjudicated_view(client, disputed, researcher) -> None:
    comparison_adjudicate(comparison=disputed["split"], outcomes={"overall": "b"}, by=researcher)
    client.force_login(researcher)
    page = client.get(f"/stats/{disputed['campaign'].pk}/", {"adjudicated": "on"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "Adjudicated outcomes where available" in text
    assert f"/review/campaigns/{disputed['campaign'].pk}/adjudication/" in text
    download = client.get(f"/stats/{disputed['campaign'].pk}/export/statistics.json", {"adjudicated": "on"})
    overall = next(
        row for row in json.loads(b"".join(download.streaming_content))["pairs"] if row["criterion"] == "overall"
    )
    assert (overall["wins_a"], overall["wins_b"]) == (4, 4)


def test_the_dpo_dataset_prefers_adjudicated_outcomes_only_when_asked(client, disputed, researcher) -> None:
    campaign = disputed["campaign"]
    comparison_adjudicate(comparison=disputed["split"], outcomes={"overall": "b"}, by=researcher)
    split = disputed["split"].pk
    plain = preference_outcomes_select(campaign=campaign, rules=SelectionRules(min_agreement=0.6))
    preferred = preference_outcomes_select(
        campaign=campaign, rules=SelectionRules(min_agreement=0.6, prefer_adjudicated=True)
    )
    assert (split, "a") in plain and (split, "b") in preferred and (split, "a") not in preferred
    client.force_login(researcher)
    url = f"/stats/{campaign.pk}/export/dpo.jsonl"
    lines = b"".join(client.get(url, {"prefer_adjudicated": "on"}).streaming_content).splitlines()
    chosen = [json.loads(line)["chosen"][0]["content"] for line in lines]
    # Per judgement: split's three judgements now all prefer tuned (b), agreed's three prefer base (a).
    assert chosen.count("Answer from tuned") == 3 + 1  # three_way's single b vote stays
    lines = b"".join(client.get(url).streaming_content).splitlines()
    assert [json.loads(line)["chosen"][0]["content"] for line in lines].count("Answer from tuned") == 2


def test_the_queue_and_the_comparison_page_record_a_final_outcome(client, disputed, researcher) -> None:
    campaign, split = disputed["campaign"], disputed["split"]
    client.force_login(researcher)
    queue = client.get(f"/review/campaigns/{campaign.pk}/adjudication/", {"rule": "any", "criterion": "overall"})
    assert queue.status_code == 200 and queue.content.decode().count('id="comparison-') == 2
    assert client.get(f"/review/campaigns/{campaign.pk}/adjudication/", {"rule": "sometimes"}).status_code == 400
    page = client.get(f"/review/campaigns/{campaign.pk}/comparisons/{split.pk}/")
    assert page.status_code == 200 and page.content.decode().count('<td class="outcome">') == 3 * 6
    url = f"/review/campaigns/{campaign.pk}/comparisons/{split.pk}/adjudicate/"
    empty = client.post(url, {"note": "nothing chosen"}, follow=True)
    assert "Choose an outcome for at least one criterion" in empty.content.decode()
    done = client.post(url, {"overall": "b", "note": "a misreads the dose"}, follow=True)
    assert "Recorded the final outcome of Overall." in done.content.decode()
    assert Adjudication.objects.get().note == "a misreads the dose"
    # The form no longer offers overall; a stale form posting it again is told who decided.
    assert 'name="overall"' not in done.content.decode()
    other = factories.user("ria", "researcher")
    client.force_login(other)
    stale = client.post(url, {"overall": "a"}, follow=True)
    assert "rex already adjudicated Overall of this comparison" in stale.content.decode()
    assert Adjudication.objects.count() == 1
    other_campaign = factories.campaign()
    assert client.get(f"/review/campaigns/{other_campaign.pk}/comparisons/{split.pk}/").status_code == 404


def test_the_api_counts_adjudicated_outcomes_with_adjudicated(disputed, researcher) -> None:
    from rest_framework.test import APIClient

    comparison_adjudicate(comparison=disputed["split"], outcomes={"overall": "b"}, by=researcher)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=researcher).key}")
    url = f"/api/campaigns/{disputed['campaign'].pk}/statistics/"
    for query, wins in (({}, (6, 2)), ({"adjudicated": "true"}, (4, 4))):
        pairs = api.get(url, {"n_boot": 100, **query}).json()["pairs"]
        overall = next(row for row in pairs if row["criterion"] == "overall")
        assert (overall["wins_a"], overall["wins_b"]) == wins
