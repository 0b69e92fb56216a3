"""Files and campaigns past PostgreSQL's 65,535 bound parameters a statement: imports and generation still work."""

import json
import time

import pytest

from evaluator.models import Assignment, Comparison, Judgement, Prompt
from evaluator.services.generation import generation_job_prompts, generation_job_queue, missing_samples
from evaluator.services.imports import judgements_import, prompts_import
from tests import factories

pytestmark = pytest.mark.django_db

# One more than the most parameters PostgreSQL binds in one statement (a 16-bit count in the wire protocol).
PAST_THE_LIMIT = 65_536


def test_a_100k_line_prompt_file_imports_whole() -> None:
    campaign = factories.campaign()
    data = "\n".join(json.dumps({"id": f"q{n}", "prompt": f"Question {n}?"}) for n in range(100_000)).encode()

    started = time.perf_counter()
    assert prompts_import(campaign=campaign, file_name="big.jsonl", data=data) == 100_000

    assert Prompt.objects.filter(campaign=campaign).count() == 100_000
    assert time.perf_counter() - started < 30


@pytest.mark.slow  # some 400,000 rows written: from half a minute to minutes on two shared cores
def test_a_judgement_file_over_more_prompts_than_one_statement_may_bind_imports_whole() -> None:
    campaign = factories.campaign()
    line = {"model_a": "alpha", "model_b": "beta", "response_a": "Yes.", "response_b": "No.", "annotator": "ann"}
    data = "\n".join(
        json.dumps({**line, "prompt_id": f"q{n}", "prompt": f"Question {n}?", "criteria": {"overall": "a"}})
        for n in range(PAST_THE_LIMIT)
    ).encode()

    summary = judgements_import(campaign=campaign, data=data)

    assert summary.judgements == summary.prompts_created == summary.comparisons_created == PAST_THE_LIMIT
    assert Judgement.objects.filter(comparison__campaign=campaign).count() == PAST_THE_LIMIT
    # The ranking columns were refreshed for every comparison, the last batch included.
    assert not Comparison.objects.filter(campaign=campaign).exclude(judgement_count=1).exists()
    assert (
        Assignment.objects.filter(comparison__campaign=campaign, completed_at__isnull=False).count() == PAST_THE_LIMIT
    )


def test_a_campaign_with_more_prompts_than_one_statement_may_bind_is_queued_and_its_missing_answers_found() -> None:
    campaign = factories.campaign()
    Prompt.objects.bulk_create(
        (Prompt(campaign=campaign, external_id=f"q{n}", text=f"Question {n}?") for n in range(PAST_THE_LIMIT)),
        batch_size=5_000,
    )
    first, second = factories.variant(), factories.variant()
    prompts = list(Prompt.objects.filter(campaign=campaign).order_by("pk"))
    answered = prompts[-1]
    factories.candidate(answered, first, sample_index=0)

    every_prompt = generation_job_queue(campaign=campaign, variants=[first, second])
    listed = generation_job_queue(campaign=campaign, variants=[first, second], prompts=prompts)

    assert every_prompt.total == listed.total == 2 * PAST_THE_LIMIT
    assert listed.prompts.count() == PAST_THE_LIMIT
    for job in (every_prompt, listed):
        assert len(generation_job_prompts(job=job)) == PAST_THE_LIMIT
    todo = missing_samples(variant=first, prompts=prompts, samples=2)
    assert len(todo) == 2 * PAST_THE_LIMIT - 1
    assert (answered, 0) not in todo and (answered, 1) in todo
