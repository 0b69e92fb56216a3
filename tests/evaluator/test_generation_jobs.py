"""Samples per prompt as a variant's own generation setting: the variant form, the job's count and override, and
how the answers of variants with different counts are paired. The generation itself runs in
tests/workers/test_generation_tasks.py."""

import pytest

from evaluator.errors import ServiceError
from evaluator.models import Comparison, GenerationJob, ModelVariant
from evaluator.services.generation import (
    candidates_store,
    comparisons_create,
    generation_job_queue,
    generation_job_samples,
)
from evaluator.services.variants import variant_create
from tests import factories

pytestmark = pytest.mark.django_db

VARIANT_FORM = {"quantization": "none", "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 24}


def test_an_admin_sets_a_variants_samples_per_prompt_on_the_variant_form(client, admin_user, tiny_model_dir) -> None:
    client.force_login(admin_user)
    form = {**VARIANT_FORM, "base_model": str(tiny_model_dir)}  # a base the form's check accepts
    client.post("/manage/variants/new/", {**form, "name": "three", "samples_per_prompt": 3})
    client.post("/manage/variants/new/", {**form, "name": "unset"})
    refused = client.post("/manage/variants/new/", {**form, "name": "nine", "samples_per_prompt": 9}, follow=True)

    assert ModelVariant.objects.get(name="three").generation_settings == {
        "max_new_tokens": 24,
        "temperature": 0.7,
        "top_p": 0.95,
        "samples_per_prompt": 3,
    }
    assert ModelVariant.objects.get(name="unset").generation_settings["samples_per_prompt"] == 1
    assert "Samples per prompt: Ensure this value is less than or equal to 8." in refused.content.decode()
    assert not ModelVariant.objects.filter(name="nine").exists()


def test_the_variant_service_refuses_a_bad_sample_count_naming_it() -> None:
    with pytest.raises(ServiceError, match="samples_per_prompt must be an integer from 1 to 64, got 0"):
        variant_create(name="none", base_model="tiny", generation_settings={"samples_per_prompt": 0})
    assert not ModelVariant.objects.exists()


def test_a_generation_job_asks_each_variant_for_its_own_samples_unless_it_overrides_them() -> None:
    campaign = factories.campaign()
    for _ in range(3):
        factories.prompt(campaign)
    three = factories.variant(generation_settings={"samples_per_prompt": 3})
    one = factories.variant()  # settings stored before samples_per_prompt existed: one sample

    own = generation_job_queue(campaign=campaign, variants=[three, one])
    overridden = generation_job_queue(campaign=campaign, variants=[three, one], samples_per_prompt=2)

    assert own.samples_per_prompt is None and own.total == 3 * (3 + 1)
    assert generation_job_samples(job=own) == {three.pk: 3, one.pk: 1}
    assert overridden.total == 3 * (2 + 2)
    assert generation_job_samples(job=overridden) == {three.pk: 2, one.pk: 2}
    for bad in (0, 65):
        with pytest.raises(ServiceError, match="Samples per prompt must be from 1 to 64"):
            generation_job_queue(campaign=campaign, variants=[three, one], samples_per_prompt=bad)
    assert GenerationJob.objects.count() == 2


def test_the_generation_form_leaves_the_count_to_each_variant_when_it_is_empty(client, admin_user) -> None:
    campaign = factories.campaign()
    factories.prompt(campaign)
    two, one = factories.variant(generation_settings={"samples_per_prompt": 2}), factories.variant()
    client.force_login(admin_user)

    client.post(f"/manage/campaigns/{campaign.pk}/generate/", {"variants": [two.pk, one.pk], "samples_per_prompt": ""})

    job = GenerationJob.objects.get(campaign=campaign)
    assert job.samples_per_prompt is None and job.total == 2 + 1


def test_answers_pair_sample_for_sample_and_a_variant_with_fewer_samples_wraps_round() -> None:
    campaign = factories.campaign()
    prompt = factories.prompt(campaign)
    counts = {"sampled": 3, "greedy": 1, "pair": 2}
    variants = {name: factories.variant(name=name) for name in counts}
    for name, count in counts.items():
        for sample in range(count):
            factories.candidate(prompt, variants[name], sample_index=sample)
    samples = {variants[name].pk: count for name, count in counts.items()}

    created = comparisons_create(campaign=campaign, samples=samples)

    pairs = {
        (c.variant_a.name, c.candidate_a.sample_index, c.variant_b.name, c.candidate_b.sample_index)
        for c in Comparison.objects.select_related("variant_a", "variant_b", "candidate_a", "candidate_b")
    }
    assert pairs == {
        ("sampled", 0, "greedy", 0), ("sampled", 1, "greedy", 0), ("sampled", 2, "greedy", 0),
        ("sampled", 0, "pair", 0), ("sampled", 1, "pair", 1), ("sampled", 2, "pair", 0),
        ("greedy", 0, "pair", 0), ("greedy", 0, "pair", 1),
    }  # fmt: skip
    assert created == len(pairs) == 8
    assert comparisons_create(campaign=campaign, samples=samples) == 0


def test_an_answer_with_a_nul_byte_is_stored_with_a_replacement_character() -> None:
    # PostgreSQL text cannot hold NUL; a model can still emit that byte, and the batch must not fail for it.
    campaign = factories.campaign()
    question = factories.prompt(campaign)
    variant = factories.variant()
    job = generation_job_queue(campaign=campaign, variants=[variant, factories.variant()])
    row = {
        "prompt_id": question.pk,
        "sample_index": 0,
        "text": "before\x00after",
        "generation_settings": {},
        "seed": 1,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "latency_ms": 5,
    }
    assert candidates_store(job=job, variant=variant, generated=[row]) == 1
    assert variant.candidates.get().text == "before\ufffdafter"


def test_the_campaign_page_lists_each_job_with_its_counts_and_its_variants_one_a_line(client, admin_user) -> None:
    campaign = factories.campaign()
    factories.prompt(campaign)
    first = factories.variant(name="smollm2-135m-instruct · greedy")
    second = factories.variant(name="smollm2-135m-instruct · greedy · <b>SFT</b> #1")
    job = generation_job_queue(campaign=campaign, variants=[first, second])
    client.force_login(admin_user)

    live = client.get(f"/manage/campaigns/{campaign.pk}/generation/").content.decode()

    assert f"<strong>#{job.pk}</strong>" in live and "0 / 2 answers · 0 new pairs" in live
    names = "<li>smollm2-135m-instruct · greedy</li><li>smollm2-135m-instruct · greedy · &lt;b&gt;SFT&lt;/b&gt; #1</li>"
    assert f'<ul class="names">{names}</ul>' in live
    assert f'<ul class="names">{names}</ul>' in client.get(f"/manage/campaigns/{campaign.pk}/").content.decode()
