"""The demo's progress page (/demo/): each preparation step read from the job rows that do the work, the record of
seed_demo's model choice, and who may see the page."""

import pytest
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import (
    Campaign,
    DemoPreparation,
    Document,
    DocumentCollection,
    GenerationJob,
    JobStatus,
    TrainingJob,
)
from evaluator.selectors.demo import NOT_USED, WAITING, demo_preparation_pending, demo_progress
from evaluator.services.demo import demo_preparation_fail, demo_preparation_finish, demo_preparation_start
from tests import factories

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
CHOSEN = ("smollm2-135m-instruct", "Qwen/Qwen2.5-0.5B-Instruct cannot be loaded (offline).")


def ended(status: str = JobStatus.SUCCEEDED, **fields: object) -> dict[str, object]:
    return {"status": status, "finished_at": timezone.now(), **fields}


def demo_rows(
    *,
    collection_status: str = JobStatus.RUNNING,
    training: dict[str, object] | None = None,
    generation: dict[str, object] | None = None,
) -> tuple[Campaign, DemoPreparation]:
    """The rows seed_demo leaves: a chosen model, a collection of two documents behind a retrieval variant, an SFT
    job on the greedy variant and the first generation job over the three variants."""
    campaign = factories.campaign(name="Heritage and PEFT questions")
    preparation = demo_preparation_start(campaign=campaign, wanted_model="Qwen/Qwen2.5-0.5B-Instruct")
    demo_preparation_finish(preparation=preparation, base_model=CHOSEN[0], reason=CHOSEN[1])
    finished = {"finished_at": timezone.now()} if collection_status != JobStatus.RUNNING else {}
    collection = DocumentCollection.objects.create(
        name="Archive handbook", status=collection_status, chunk_count=9, **finished
    )
    Document.objects.bulk_create(
        Document(collection=collection, name=f"{name}.md", text=name, sha256=name) for name in ("archive", "peft")
    )
    sampled, greedy = factories.variant(name="smol · sampled"), factories.variant(name="smol · greedy")
    rag = factories.variant(name="smol · greedy + RAG", collection=collection)
    TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=greedy,
        method=TrainingJob.Method.SFT,
        **(training or {"status": JobStatus.QUEUED}),
    )
    job = GenerationJob.objects.create(
        campaign=campaign, **(generation or {"status": JobStatus.RUNNING, "total": 108, "done": 40})
    )
    job.variants.set([sampled, greedy, rag])
    return campaign, preparation


def states(progress: object) -> dict[str, str]:
    return {step.key: step.state for step in progress.steps}  # type: ignore[attr-defined]


def test_without_a_demo_there_is_no_progress_and_nothing_pending() -> None:
    assert demo_progress() is None
    assert demo_preparation_pending() is False


def test_it_reads_every_step_from_the_job_rows_while_the_worker_runs_them(django_assert_num_queries) -> None:
    demo_rows(training={"status": JobStatus.RUNNING, "progress_step": 7, "progress_total": 21, "dataset_size": 27})

    with django_assert_num_queries(6):
        progress = demo_progress()

    assert progress is not None
    assert states(progress) == {
        "model": "succeeded",
        "index": "running",
        "training": "running",
        "generation": "running",
        "pairs": WAITING,
    }
    steps = {step.key: step for step in progress.steps}
    assert steps["model"].detail == f"Using {CHOSEN[0]}. {CHOSEN[1]}"
    assert "2 documents" in steps["index"].detail
    assert (steps["training"].done, steps["training"].total, steps["training"].percent) == (7, 21, 33)
    assert steps["training"].detail.startswith("Step 7 of 21 · A LoRA adapter on smol · greedy from 27 Q&A pairs")
    assert (steps["generation"].done, steps["generation"].total) == (40, 108)
    assert "the adapter's answers follow its training" in steps["generation"].detail
    assert (progress.ready, progress.finished, progress.steps_done) == (False, False, 1)
    assert demo_preparation_pending() is True


def test_the_first_pairs_make_it_ready_while_the_adapter_still_trains() -> None:
    campaign, _ = demo_rows(
        collection_status=JobStatus.SUCCEEDED,
        training={"status": JobStatus.RUNNING, "progress_step": 2, "progress_total": 21},
        generation=ended(total=108, done=108, comparisons_created=1),
    )
    factories.comparison(campaign)

    progress = demo_progress()

    assert progress is not None and progress.ready and not progress.finished
    # The base variants' job ended, but the adapter's answers are still to come.
    assert states(progress)["generation"] == WAITING
    assert states(progress)["pairs"] == "succeeded"


def test_a_failed_step_shows_its_error_and_the_page_stops_polling_once_everything_ended() -> None:
    demo_rows(
        collection_status=JobStatus.SUCCEEDED,
        training=ended(JobStatus.FAILED, error="RuntimeError: out of memory at step 3"),
        generation=ended(total=108, done=108),
    )

    progress = demo_progress()

    assert progress is not None and progress.finished and progress.failed
    training = next(step for step in progress.steps if step.key == "training")
    assert (training.state, training.errors) == ("failed", ["RuntimeError: out of memory at step 3"])
    # Generation ended without a comparison: that is said too, rather than waited for.
    pairs = next(step for step in progress.steps if step.key == "pairs")
    assert (pairs.state, pairs.errors) == ("failed", ["The generation jobs made no pairs."])
    assert demo_preparation_pending() is False


def test_a_campaign_without_retrieval_or_sft_does_not_wait_for_them() -> None:
    campaign = factories.campaign()
    preparation = demo_preparation_start(campaign=campaign, wanted_model="tiny")
    demo_preparation_finish(preparation=preparation, base_model="tiny", reason="PREFLOOP_BASE_MODEL names it.")
    job = GenerationJob.objects.create(campaign=campaign, **ended(total=4, done=4, comparisons_created=2))
    job.variants.set([factories.variant(), factories.variant()])
    factories.comparison(campaign)

    progress = demo_progress()

    assert progress is not None
    assert states(progress) == {
        "model": "succeeded",
        "index": NOT_USED,
        "training": NOT_USED,
        "generation": "succeeded",
        "pairs": "succeeded",
    }
    assert progress.finished and not progress.failed


def test_the_newest_preparation_is_the_one_shown_and_a_failed_model_step_ends_it() -> None:
    campaign = factories.campaign()
    first = demo_preparation_start(campaign=campaign, wanted_model="tiny")
    demo_preparation_finish(preparation=first, base_model="tiny", reason="it loads")
    second = demo_preparation_start(campaign=campaign, wanted_model="Qwen/Qwen2.5-0.5B-Instruct")
    assert demo_preparation_pending() is True
    assert demo_progress().steps[0].state == "running"  # type: ignore[union-attr]

    assert demo_preparation_fail(preparation=second, error=KeyboardInterrupt("interrupted")) is True

    progress = demo_progress()
    assert progress is not None and progress.preparation == second
    assert progress.steps[0].errors == ["KeyboardInterrupt: interrupted"]
    assert progress.finished and demo_preparation_pending() is False


def test_a_preparation_records_its_choice_once_and_never_succeeds_without_one() -> None:
    preparation = demo_preparation_start(campaign=factories.campaign(), wanted_model="tiny")
    with pytest.raises(ServiceError, match="needs the chosen base model"):
        demo_preparation_finish(preparation=preparation, base_model="tiny", reason="")
    demo_preparation_finish(preparation=preparation, base_model="tiny", reason="it loads")
    with pytest.raises(ServiceError, match="had already ended"):
        demo_preparation_finish(preparation=preparation, base_model="other", reason="again")
    assert DemoPreparation.objects.get().base_model == "tiny"

    with pytest.raises(IntegrityError):
        DemoPreparation.objects.create(campaign=preparation.campaign, wanted_model="x", status=JobStatus.SUCCEEDED)


# The page -----------------------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(client) -> None:
    response = client.get(reverse("demo_preparation"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("role", ["annotator", "researcher", "admin"])
def test_every_signed_in_role_sees_the_steps(client, role: str) -> None:
    demo_rows()
    client.force_login(factories.user("someone", role))

    response = client.get(reverse("demo_preparation"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'hx-trigger="every 3s"' in html  # still preparing: the panel polls
    for title in ("Base model", "Document collection index", "SFT adapter training", "Answer generation"):
        assert title in html
    assert CHOSEN[1] in html and "40 / 108" in html


def test_the_poll_gets_the_panel_and_286_once_nothing_changes_any_more(client, annotator) -> None:
    campaign, _ = demo_rows(
        collection_status=JobStatus.SUCCEEDED, training=ended(), generation=ended(total=108, done=108)
    )
    client.force_login(annotator)
    assert client.get(reverse("demo_preparation"), **HTMX).status_code == 286

    factories.comparison(campaign)
    response = client.get(reverse("demo_preparation"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 286 and "<html" not in html
    assert "First pairs ready" in html and f'href="{reverse("rate")}"' in html and "Start rating" in html
    assert "hx-trigger" not in client.get(reverse("demo_preparation")).content.decode()


def test_the_poll_goes_on_while_a_step_runs(client, researcher) -> None:
    demo_rows()
    client.force_login(researcher)
    assert client.get(reverse("demo_preparation"), **HTMX).status_code == 200


def test_without_a_demo_the_page_says_how_to_get_one(client, annotator) -> None:
    client.force_login(annotator)
    html = client.get(reverse("demo_preparation")).content.decode()
    assert "No demo here" in html and "hx-trigger" not in html


def test_the_pages_each_role_lands_on_link_to_it_while_the_demo_is_prepared(client, admin_user, annotator) -> None:
    link = f'href="{reverse("demo_preparation")}"'
    client.force_login(admin_user)
    assert link not in client.get(reverse("manage")).content.decode()

    demo_rows()
    assert link in client.get(reverse("manage")).content.decode()
    assert link in client.get(reverse("stats_index")).content.decode()
    client.force_login(annotator)
    assert link in client.get(reverse("rate")).content.decode()  # nothing to rate yet: the done page
