"""How a worker started without flags behaves: one task at a time in a fresh child process, model work on the GPU
queue and CPU work (exports) on the default queue, and settings read from the environment that refuse bad values."""

import subprocess

import pytest

from tests.conftest import run_python
from workers.celery import app


def queue_of(task: str) -> str:
    return app.amqp.router.route({}, task, args=(), kwargs={})["queue"].name


def test_a_worker_runs_one_task_at_a_time_each_in_a_fresh_child_process() -> None:
    assert app.conf.worker_concurrency == 1
    assert app.conf.worker_max_tasks_per_child == 1
    assert app.conf.worker_prefetch_multiplier == 1


def test_model_work_goes_to_the_gpu_queue_and_exports_which_merge_on_the_cpu_to_the_default_queue() -> None:
    for task in ("generate_candidates", "run_training_job", "index_collection"):
        assert queue_of(f"workers.tasks.{task}") == "gpu", task
    assert queue_of("workers.tasks.export_model") == "default"


def settings_value(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python(f"import django; django.setup(); from django.conf import settings; print(settings.{name})", **env)


def test_by_default_a_lost_worker_is_noticed_within_a_minute_and_a_waiting_copy_outlives_no_visibility_timeout() -> (
    None
):
    from django.conf import settings

    reaper = app.conf.beat_schedule["reap-lost-jobs"]
    assert reaper["task"] == "workers.tasks.reap_jobs"
    # The holder's heartbeat goes stale, then the next reaper run queues the job again.
    assert settings.PREFLOOP_JOB_STALE_SECONDS + reaper["schedule"] <= 60
    assert settings.PREFLOOP_JOB_HEARTBEAT_SECONDS * 3 <= settings.PREFLOOP_JOB_STALE_SECONDS
    visibility = settings_value("CELERY_BROKER_TRANSPORT_OPTIONS", CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    assert "'visibility_timeout': 21600" in visibility.stdout
    assert settings.PREFLOOP_JOB_HELD_COUNTDOWN < 21600


def test_the_worker_pool_settings_come_from_the_environment() -> None:
    assert settings_value("CELERY_WORKER_MAX_TASKS_PER_CHILD", CELERY_WORKER_MAX_TASKS_PER_CHILD="5").stdout == "5\n"
    refused = settings_value("CELERY_WORKER_CONCURRENCY", CELERY_WORKER_CONCURRENCY="0")
    assert refused.returncode != 0 and "CELERY_WORKER_CONCURRENCY=0 must be at least 1" in refused.stderr


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_the_generation_backend_is_transformers_or_vllm(backend: str) -> None:
    assert settings_value("PREFLOOP_GENERATION_BACKEND", PREFLOOP_GENERATION_BACKEND=backend).stdout == f"{backend}\n"


def test_an_unknown_generation_backend_is_refused_naming_the_choices() -> None:
    refused = settings_value("PREFLOOP_GENERATION_BACKEND", PREFLOOP_GENERATION_BACKEND="tensorrt")
    assert refused.returncode != 0
    assert "PREFLOOP_GENERATION_BACKEND='tensorrt' is not one of transformers, vllm" in refused.stderr
