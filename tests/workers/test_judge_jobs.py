"""Judges on real model servers: a local-model judge (the tiny model) run by a real Celery worker, an endpoint
judge asking a real OpenAI-compatible server, `transformers serve`, started here on a free loopback port, and a
running job cancelled between chunks. The tiny model writes no verdict line: every reply is stored, in both orders,
as unparseable."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluator.models import JobStatus, Judge, JudgeJob, JudgeVerdict
from evaluator.services.judges import judge_create, judge_job_queue
from tests import factories
from tests.conftest import wait_until
from tests.evaluator.test_judges import key, server  # noqa: F401 - the endpoint fixtures, used by name below
from workers.tasks import judge_campaign

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-serve-test-81f0d2"


def tiny_campaign(pairs: int = 2):
    campaign = factories.campaign()
    first, second = factories.variant(), factories.variant()
    for number in range(pairs):
        factories.comparison(
            campaign, variants=(first, second), texts=(f"Paris, number {number}.", f"Lyon is the capital {number}.")
        )
    return campaign


def assert_both_orders_stored_unparseable(job: JudgeJob, pairs: int) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.done == job.total == pairs and job.unparseable == 2 * pairs
    verdicts = JudgeVerdict.objects.filter(job=job)
    orders = sorted(verdicts.values_list("comparison_id", "order"))
    assert orders == sorted((pk, order) for pk in {pk for pk, _ in orders} for order in ("ab", "ba"))
    assert len(orders) == 2 * pairs
    assert all(v.choice is None and v.parse_status != "ok" and v.raw_output for v in verdicts)
    assert all(v.completion_tokens and v.prompt_tokens and v.latency_ms >= 0 for v in verdicts)


@pytest.mark.worker
def test_a_local_model_judge_runs_on_a_real_worker_and_stores_both_orders(celery_worker_process, tiny_model_dir):
    campaign = tiny_campaign(2)
    judge = judge_create(
        name="tiny local judge", kind=Judge.Kind.LOCAL, base_model=str(tiny_model_dir), batch_size=4, max_new_tokens=8
    )
    # Queued as the page queues it: sent to the broker once the transaction commits, taken by the worker.
    job = judge_job_queue(judge=judge, campaign=campaign, criteria=["overall"])
    wait_until(
        lambda: JudgeJob.objects.get(pk=job.pk).status not in (JobStatus.QUEUED, JobStatus.RUNNING),
        "the judge job to finish on the worker",
        timeout=240,
    )
    assert_both_orders_stored_unparseable(job, pairs=2)
    assert JudgeJob.objects.get(pk=job.pk).worker.startswith(socket.gethostname())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def transformers_serve(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`transformers serve` with the tiny model preloaded, on a free loopback port; its base URL and log file."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    serve = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(serve), "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 120
            while "Uvicorn running" not in log_path.read_text(errors="replace"):
                assert server.poll() is None, f"transformers serve exited:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"transformers serve did not start:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.3)
            yield f"http://127.0.0.1:{port}/v1", log_path
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.mark.server
def test_an_endpoint_judge_asks_transformers_serve_in_both_orders(
    transformers_serve, tiny_model_dir, monkeypatch, caplog
) -> None:
    url, log_path = transformers_serve
    monkeypatch.setenv("PREFLOOP_TEST_SERVE_KEY", SECRET)
    campaign = tiny_campaign(2)
    judge = judge_create(
        name="served tiny judge",
        kind=Judge.Kind.ENDPOINT,
        base_url=url,
        model_name=str(tiny_model_dir),
        api_key_env="PREFLOOP_TEST_SERVE_KEY",
        max_new_tokens=8,
        concurrency=2,
        timeout_seconds=120,
    )
    job = judge_job_queue(judge=judge, campaign=campaign, criteria=["overall"])
    judge_campaign.apply((job.pk,))

    assert_both_orders_stored_unparseable(job, pairs=2)
    assert 'POST /v1/chat/completions HTTP/1.1" 200' in log_path.read_text()
    assert SECRET not in caplog.text and SECRET not in log_path.read_text()
    assert not Judge.objects.filter(api_key_env__contains=SECRET).exists()


def test_a_running_judge_job_cancelled_stops_after_its_current_pairs(server, key) -> None:  # noqa: F811
    """The cancel arrives while the first chunk is being judged (from the endpoint's own thread, committed): the
    chunk is stored whole, and the job ends cancelled before asking for the next one."""
    from django.db import connection as thread_connection

    from evaluator.services import judges as judge_services
    from evaluator.services.judges import judge_job_cancel
    from tests.evaluator.test_judges import campaign_with_pairs, endpoint_judge, prefers_the_good_answer

    campaign, _ = campaign_with_pairs(judge_services.JUDGE_CHUNK + 3)
    job = judge_job_queue(judge=endpoint_judge(server.url, concurrency=1), campaign=campaign, criteria=["overall"])

    def cancels_on_the_first_request(prompt: str) -> tuple[int, bytes]:
        if len(server.requests) == 1:
            try:
                assert judge_job_cancel(job=JudgeJob.objects.get(pk=job.pk)), "the job was running"
            finally:
                thread_connection.close()
        return prefers_the_good_answer(prompt)

    server.reply = cancels_on_the_first_request
    judge_campaign.apply((job.pk,))

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert job.done == judge_services.JUDGE_CHUNK and len(server.requests) == 2 * judge_services.JUDGE_CHUNK
    assert JudgeVerdict.objects.filter(job=job).count() == 2 * judge_services.JUDGE_CHUNK
