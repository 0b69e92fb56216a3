"""The whole preference loop through the HTTP forms, a real Celery worker on Redis, PostgreSQL and TRL.

generate → blind rating → statistics → DPO with QLoRA → new variant → its comparisons against the parent.
"""

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client

from evaluator.artifacts import artifact_local
from evaluator.models import (
    Assignment,
    Campaign,
    Candidate,
    Comparison,
    CriterionChoice,
    GenerationJob,
    JobStatus,
    Judgement,
    ModelVariant,
    TrainingJob,
)
from evaluator.rendering import render_markdown
from evaluator.selectors.rating import answers_identical
from tests import factories
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

PROMPTS = [
    {"id": "h1", "prompt": "What does a museum conservator do?"},
    {"id": "h2", "prompt": "Why are archives digitised?"},
    {"id": "h3", "prompt": "What is intangible cultural heritage?"},
    {"id": "p1", "prompt": "What is a LoRA adapter?"},
    {"id": "p2", "prompt": "How does QLoRA save memory?"},
    {"id": "p3", "prompt": "What does the beta of DPO control?"},
]
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ANSWER = re.compile(r'<article class="answer card"[^>]*>.*?<div class="markdown scroll"[^>]*>(.*?)</div>', re.S)
RATE_ACTION = re.compile(r'action="(/rate/[0-9a-f-]{36}/)"')


def logged_in(username: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    response = client.post(
        "/accounts/login/",
        {"username": username, "password": factories.PASSWORD, "csrfmiddlewaretoken": csrf(page)},
    )
    assert response.status_code == 302, f"login failed for {username}"
    return client


def csrf(response) -> str:
    match = CSRF.search(response.content.decode())
    assert match, "the page has no CSRF token"
    return match.group(1)


def post_form(client: Client, page_url: str, action: str, data: dict, **extra) -> object:
    """Open the page the form is on, then post it with that page's CSRF token, like a browser."""
    page = client.get(page_url)
    assert page.status_code == 200
    response = client.post(action, {**data, "csrfmiddlewaretoken": csrf(page)}, **extra)
    assert response.status_code == 302, response.content.decode()[:2000]
    return response


def finished(job_model: type, **filters: object) -> Callable[[], bool]:
    def check() -> bool:
        job = job_model.objects.filter(**filters).order_by("-pk").first()
        if job is not None and job.status == JobStatus.FAILED:
            pytest.fail(f"{job} failed: {job.error}")
        return job is not None and job.status == JobStatus.SUCCEEDED

    return check


def rate_everything_offered(client: Client, *, prefer: Callable[[str, str], str]) -> int:
    """Rate pairs until none is left; `prefer(left_html, right_html)` returns left, right or tie."""
    rated = 0
    while True:
        page = client.get("/rate/")
        html = page.content.decode()
        action = RATE_ACTION.search(html)
        if action is None:
            assert "Nothing to rate right now" in html
            return rated
        left, right = ANSWER.findall(html)
        side = prefer(left, right)
        choices = {slug: side for slug in Campaign.objects.get().criterion_slugs}
        response = client.post(action.group(1), {**choices, "csrfmiddlewaretoken": csrf(page)})
        assert response.status_code == 302
        rated += 1


def differing_answers(campaign: Campaign, first: ModelVariant, second: ModelVariant) -> int:
    """Prompts on which the two variants' answers differ: the comparisons pairing makes."""
    texts = {
        (candidate.prompt_id, candidate.variant_id): candidate.text
        for candidate in Candidate.objects.filter(prompt__campaign=campaign, variant__in=[first, second])
    }
    return sum(
        not answers_identical(texts[(prompt_id, first.pk)], texts[(prompt_id, second.pk)])
        for prompt_id in campaign.prompts.values_list("pk", flat=True)
        if (prompt_id, first.pk) in texts and (prompt_id, second.pk) in texts
    )


def longer_answer(left: str, right: str) -> str:
    if len(left) == len(right):
        return "tie"
    return "left" if len(left) > len(right) else "right"


def test_the_whole_loop_runs_from_prompts_to_a_retrained_variant_in_blind_rating(
    celery_worker_process, tiny_model_dir: Path, tmp_path: Path
) -> None:
    factories.user("ada", "admin")
    factories.user("ann", "annotator")
    factories.user("bea", "annotator")
    factories.user("rex", "researcher")
    admin_client = logged_in("ada")

    # 1. An admin creates a campaign, imports prompts and adds two variants of the tiny model.
    post_form(admin_client, "/manage/", "/manage/campaigns/new/", {"name": "Loop", "overlap": 2})
    campaign = Campaign.objects.get(name="Loop")
    # A new campaign is a draft nobody is assigned to: the admin assigns every annotator and activates it.
    page = f"/manage/campaigns/{campaign.pk}/"
    post_form(admin_client, page, f"{page}members/", {"group": "annotator"})
    post_form(admin_client, page, f"{page}state/", {"state": "active"})
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("\n".join(json.dumps(p) for p in PROMPTS))
    with prompts_file.open("rb") as handle:
        post_form(
            admin_client,
            f"/manage/campaigns/{campaign.pk}/",
            f"/manage/campaigns/{campaign.pk}/prompts/",
            {"file": handle},
        )
    assert campaign.prompts.count() == len(PROMPTS)
    for name, temperature in (("tiny-sampled", 0.9), ("tiny-greedy", 0.0)):
        post_form(
            admin_client,
            "/manage/",
            "/manage/variants/new/",
            {
                "name": name,
                "base_model": str(tiny_model_dir),
                "quantization": "none",
                "temperature": temperature,
                "top_p": 0.95,
                "max_new_tokens": 24,
            },
        )
    sampled, greedy = ModelVariant.objects.order_by("pk")

    # 2. The worker generates both variants' answers and pairs them.
    post_form(
        admin_client,
        f"/manage/campaigns/{campaign.pk}/",
        f"/manage/campaigns/{campaign.pk}/generate/",
        {"variants": [sampled.pk, greedy.pk], "samples_per_prompt": 1},
    )
    wait_until(finished(GenerationJob, campaign=campaign), "the first generation job")
    assert Candidate.objects.filter(prompt__campaign=campaign).count() == 2 * len(PROMPTS)
    paired = differing_answers(campaign, sampled, greedy)  # identical answers are not paired
    assert paired > 0 and Comparison.objects.filter(campaign=campaign).count() == paired

    # 3. Two annotators rate every pair blind; the longer answer wins.
    for username in ("ann", "bea"):
        assert rate_everything_offered(logged_in(username), prefer=longer_answer) == paired
    assert Judgement.objects.count() == 2 * paired
    assert CriterionChoice.objects.count() == 2 * paired * len(campaign.criterion_slugs)
    assert_outcomes_follow_the_variant_not_the_screen_side()

    # 4. The researcher's page shows the pairwise table with the sign test.
    stats = logged_in("rex").get(f"/stats/{campaign.pk}/")
    assert stats.status_code == 200
    overall = next(section for section in stats.context["report"].sections if section.slug == "overall")
    decisive = CriterionChoice.objects.filter(criterion="overall").exclude(outcome="tie")
    assert overall.pairs[0]["wins_a"] + overall.pairs[0]["wins_b"] == decisive.count()
    assert f'<td class="num">{overall.pairs[0]["wins_a"]}</td>' in stats.content.decode()

    # 5. An admin queues a DPO job; the worker trains a QLoRA adapter and registers the new variant.
    post_form(
        admin_client,
        f"/manage/campaigns/{campaign.pk}/",
        f"/manage/campaigns/{campaign.pk}/retrain/",
        {
            "method": "dpo",
            "parent_variant": greedy.pk,
            "criterion": "overall",
            "exclude_flagged": "on",
            "held_out_share": 0,  # the round uses every prompt
            "sft_source": "chosen",
            "load_in_4bit": "on",
            "double_quant": "on",
            "beta": 0.1,
            "learning_rate": 1e-2,
            "num_train_epochs": 1,
            "max_steps": 4,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_length": 128,
            "optim": "paged_adamw_8bit",
            "seed": 42,
            "save_steps": 25,
            "report_to": "tensorboard",
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "target_modules": "all-linear",
        },
    )
    job = TrainingJob.objects.get()
    wait_until(finished(TrainingJob, pk=job.pk), "the DPO job")
    job.refresh_from_db()
    child = job.result_variant
    assert child.parent == greedy
    assert (artifact_local(child.adapter_path) / "adapter_config.json").is_file()
    assert job.dataset_size == decisive.count()
    assert any("loss" in log for log in job.metrics)
    assert child.lineage["dataset_sha256"] == job.dataset_hash
    assert job.config["training"]["qlora"]["load_in_4bit"] is True
    assert list(artifact_local(child.adapter_path).parent.rglob("events.out.tfevents.*")), "no TensorBoard log"
    assert child.lineage["versions"]["bitsandbytes"]

    # 6. The new variant's answers are generated and paired with its parent's, ready for annotators.
    wait_until(finished(GenerationJob, training_job=job), "the new variant's generation job")
    new_round = Comparison.objects.filter(campaign=campaign, variant_b=child)
    assert new_round.count() == differing_answers(campaign, greedy, child) > 0
    assert set(new_round.values_list("variant_a", flat=True)) == {greedy.pk}
    page = logged_in("ann").get("/rate/")
    assert RATE_ACTION.search(page.content.decode())
    served = Assignment.objects.filter(annotator__username="ann", completed_at__isnull=True).get()
    assert served.comparison.variant_b == child


def assert_outcomes_follow_the_variant_not_the_screen_side() -> None:
    """Each stored outcome names the variant whose answer was longer on screen, wherever it was shown."""
    choices = CriterionChoice.objects.select_related(
        "judgement__comparison__candidate_a", "judgement__comparison__candidate_b"
    )
    for choice in choices:
        comparison = choice.judgement.comparison
        shown_a = len(render_markdown(comparison.candidate_a.text))
        shown_b = len(render_markdown(comparison.candidate_b.text))
        expected = "tie" if shown_a == shown_b else ("a" if shown_a > shown_b else "b")
        assert choice.outcome == expected
