"""A retrain job trained as two processes (PREFLOOP_TRAIN_PROCESSES=2: `accelerate launch`, DDP over gloo on the CPU)
on the tiny model: its progress reaches the job's row as a single process's does, one variant is registered, and a
cancel ends every process of the run."""

import json
import os
from pathlib import Path

import pytest

from evaluator.models import JobStatus, ModelVariant, TrainingJob
from evaluator.selectors.training import training_job_workdir
from evaluator.services.training_jobs import training_job_queue, training_job_run
from tests import factories
from training.launch import LAUNCH_LOG

pytestmark = [pytest.mark.django_db, pytest.mark.training]

TRAINING = {"beta": 0.1, "learning_rate": 1e-3, "max_length": 64, "qlora": {"lora_r": 4, "lora_alpha": 8}}


@pytest.fixture
def two_processes(settings, tmp_path: Path) -> None:
    settings.PREFLOOP_TRAIN_PROCESSES = 2
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


@pytest.fixture
def rated_campaign(annotator, tiny_model_dir: Path):
    campaign = factories.campaign(name="Rated")
    parent = factories.variant(name="tiny-parent", base_model=str(tiny_model_dir))
    other = factories.variant(name="tiny-other", base_model=str(tiny_model_dir))
    for number in range(8):
        comparison = factories.comparison(campaign, variants=(parent, other), texts=(f"Yes {number}.", "No."))
        factories.judgement(comparison, annotator, "a")
    return campaign, parent


def test_a_job_trained_as_two_processes_reports_every_step_once_and_registers_one_variant(
    two_processes, rated_campaign
) -> None:
    campaign, parent = rated_campaign
    job = training_job_queue(campaign=campaign, parent_variant=parent, training={**TRAINING, "max_steps": 3})

    training_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [log["step"] for log in job.metrics if "loss" in log] == [1, 2, 3]
    assert job.progress_step == job.progress_total == 3
    assert ModelVariant.objects.filter(training_job=job).count() == 1
    workdir = training_job_workdir(job=job)
    assert (workdir / "adapter" / "adapter_model.safetensors").is_file()
    finished = [json.loads(line) for line in (workdir / LAUNCH_LOG).read_text().splitlines() if '"processes"' in line]
    assert sorted(line["process"] for line in finished) == [0, 1]
    assert "training as 2 processes" in (workdir / "job.log").read_text()


def test_a_cancel_ends_every_process_of_a_job_trained_as_two(two_processes, rated_campaign) -> None:
    campaign, parent = rated_campaign
    job = training_job_queue(campaign=campaign, parent_variant=parent, training={**TRAINING, "max_steps": 500})
    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)  # asked while the job starts

    training_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert not ModelVariant.objects.filter(training_job=job).exists()
    config = str(training_job_workdir(job=job) / "job.yaml")
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and config in command_line(pid)]
    assert left == [], "no process of the run is left"


def command_line(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
