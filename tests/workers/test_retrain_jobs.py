"""Retrain jobs on a real Celery worker process and Redis, training QLoRA adapters on the tiny model on the CPU:
the whole job, a cancel from the job page, and a worker process killed mid-training that resumes from its
checkpoint and registers its variant once."""

import hashlib
import os
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

from evaluator.artifacts import artifact_local
from evaluator.models import Comparison, GenerationJob, JobStatus, ModelVariant, TrainingJob
from evaluator.services.training_jobs import training_job_queue
from tests import factories
from tests.conftest import wait_until
from tests.evaluator.test_the_loop import logged_in, post_form

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

TRAINING = {
    "beta": 0.1,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 2,
    "max_length": 96,
    "qlora": {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
}


def base_digest(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def job_state(job_id: int) -> TrainingJob:
    return TrainingJob.objects.get(pk=job_id)


@pytest.fixture
def rated_campaign(tiny_model_dir: Path, annotator):
    """Eight prompts, two variants of the tiny model, one decisive judgement per comparison."""
    campaign = factories.campaign(name="Retrain")
    parent = factories.variant(
        name="tiny-parent",
        base_model=str(tiny_model_dir),
        generation_settings={"max_new_tokens": 8, "temperature": 0.0},
    )
    other = factories.variant(name="tiny-other", base_model=str(tiny_model_dir))
    for number in range(8):
        comparison = factories.comparison(
            campaign,
            variants=(parent, other),
            texts=(f"A museum keeps objects safe, answer {number}.", f"No idea {number}."),
        )
        factories.judgement(comparison, annotator, "a" if number % 2 else "b")
    return campaign, parent


def test_a_qlora_dpo_job_trains_registers_its_variant_and_starts_its_round(
    celery_worker_process, rated_campaign
) -> None:
    campaign, parent = rated_campaign
    base_before = base_digest(Path(parent.base_model))
    held_out = sorted(campaign.prompts.values_list("external_id", flat=True))[:2]
    job = training_job_queue(
        campaign=campaign,
        parent_variant=parent,
        training={**TRAINING, "max_steps": 3, "save_steps": 2},
        held_out_prompts=held_out,
    )
    wait_until(lambda: job_state(job.pk).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), "the DPO job")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 1 and job.progress_step == 3
    assert job.dataset_size == 6  # eight judged pairs less the two held-out prompts' pairs
    assert [log["step"] for log in job.metrics if "loss" in log] == [1, 2, 3]
    assert job.last_checkpoint.endswith("checkpoint-3")  # every 2 steps, and at the end
    child = ModelVariant.objects.get(training_job=job)
    # LoRA's B matrices start at zero: training moved them; the base model's own files were never written.
    weights = load_file(artifact_local(child.adapter_path) / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())
    assert base_digest(Path(parent.base_model)) == base_before
    assert child.parent == parent and child.lineage["dataset_sha256"] == job.dataset_hash
    assert child.lineage["held_out_prompts"] == held_out
    log = (artifact_local(child.adapter_path).parent / "job.log").read_text()
    assert "attempt 1 of 3" in log and "registered" in log

    # Its round: answers on the held-out prompts only, paired with the parent's.
    wait_until(lambda: GenerationJob.objects.filter(training_job=job, status=JobStatus.SUCCEEDED).exists(), "the round")
    new_round = Comparison.objects.filter(campaign=campaign, variant_b=child)
    assert sorted(new_round.values_list("prompt__external_id", flat=True)) == held_out


def test_a_running_job_cancelled_from_its_page_ends_cancelled_within_a_few_steps(
    celery_worker_process, rated_campaign, admin_user
) -> None:
    campaign, parent = rated_campaign
    job = training_job_queue(campaign=campaign, parent_variant=parent, training={**TRAINING, "max_steps": 500})
    wait_until(lambda: job_state(job.pk).progress_step >= 2, "the job's first steps")
    client = logged_in(admin_user.username)
    post_form(client, f"/manage/jobs/{job.pk}/", f"/manage/jobs/{job.pk}/cancel/", {})
    asked_at = job_state(job.pk).progress_step
    wait_until(lambda: job_state(job.pk).status != JobStatus.RUNNING, "the cancel", timeout=120)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert job.progress_step <= asked_at + 3
    assert not ModelVariant.objects.filter(training_job=job).exists()


def test_a_worker_killed_mid_training_resumes_from_its_checkpoint_and_registers_one_variant(
    celery_worker_process, rated_campaign
) -> None:
    campaign, parent = rated_campaign
    job = training_job_queue(
        campaign=campaign, parent_variant=parent, training={**TRAINING, "max_steps": 14, "save_steps": 3}
    )
    wait_until(lambda: job_state(job.pk).progress_step >= 4 and job_state(job.pk).last_checkpoint, "a checkpoint")
    holder = job_state(job.pk).worker
    os.kill(int(holder.rpartition(":")[2]), signal.SIGKILL)

    wait_until(lambda: job_state(job.pk).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), "the resumed job")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2 and job.worker != holder
    assert ModelVariant.objects.filter(training_job=job).count() == 1
    steps = [log["step"] for log in job.metrics if "loss" in log]
    assert steps == list(range(1, 15)), "every step logged once, none twice after the resume"
    log = (artifact_local(job.result_variant.adapter_path).parent / "job.log").read_text()
    assert "resuming from checkpoint-" in log
