"""The fault suite's stack: a Redis server of its own (so it can be stopped and restarted without touching the
shared one), real `celery worker` and `celery beat` processes on it connected to the test database, and the test
process publishing to it.

The workers run with recovery tuned for seconds instead of minutes (RECOVERY): a heartbeat every second, a holder
lost after 3 s without one, a reaper every second, a queued job sent again 3 s after its message was lost.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import REPO, database_url, start_worker, wait_until_ready
from workers.celery import app

RECOVERY = {
    "PREFLOOP_JOB_HEARTBEAT_SECONDS": "1",
    "PREFLOOP_JOB_STALE_SECONDS": "3",
    "PREFLOOP_JOB_HELD_COUNTDOWN": "2",
    "PREFLOOP_JOB_RESEND_SECONDS": "3",
    "PREFLOOP_REAPER_SECONDS": "1",
    "CELERY_UNACKED_RESTORE_SECONDS": "1",
    # One answer per model call: a generation job of a few dozen answers takes seconds, time enough for a fault.
    "PREFLOOP_GENERATION_BATCH_SIZE": "1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class OwnRedis:
    """A redis-server on a port of its own, without persistence: a restart loses every queued message."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.folder)]
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("the fault suite needs redis-server (scripts/services.sh installs it)")
    redis = OwnRedis(folder=tmp_path)
    redis.start()
    yield redis
    redis.stop()


def publish_to(url: str | None) -> None:
    """Point this process's Celery app (the services' sends) at the broker at `url`. Kombu keeps one pool per
    broker for the process's life, so the pools are let go, never closed: pointing back finds them open. (The
    write URL, because CELERY_BROKER_URL in the environment overrides any other setting of the broker's.)"""
    app.conf.broker_write_url = url
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def publishing_to(url: str) -> Iterator[None]:
    before = app.conf.get("broker_write_url")
    publish_to(url)
    try:
        yield
    finally:
        publish_to(before)


@pytest.fixture
def broker(own_redis: OwnRedis) -> Iterator[OwnRedis]:
    """The own Redis, with the services of this process publishing to it."""
    with publishing_to(own_redis.url):
        yield own_redis


@dataclass
class Stack:
    """The worker and beat processes a test started; all of them are stopped when it ends."""

    broker_url: str
    folder: Path
    processes: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **RECOVERY,
            "DATABASE_URL": database_url(connection.settings_dict),
            "CELERY_BROKER_URL": self.broker_url,
            **extra,
        }

    def worker(self, name: str, *, ready: bool = True, **env: str) -> "Worker":
        """A worker on both queues; with `ready` False it is left starting (call its `wait_ready`)."""
        log_path = self.folder / f"{name}.log"
        with log_path.open("wb") as log:
            process = start_worker(self.env(**env), log, "--hostname", f"{name}-{os.getpid()}@%h")
        self.processes.append((process, log_path))
        worker = Worker(process, log_path)
        if ready:
            worker.wait_ready()
        return worker

    def beat(self, **env: str) -> subprocess.Popen[bytes]:
        """`celery beat`, which sends the reaper task every PREFLOOP_REAPER_SECONDS."""
        log_path = self.folder / "beat.log"
        command = [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"]
        command += ["--schedule", str(self.folder / "beat-schedule")]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=REPO, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((process, log_path))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}" for _, path in self.processes)

    def stop(self) -> None:
        """SIGKILL every process, pools included: a warm shutdown would wait for a job the test no longer needs."""
        for process, log_path in self.processes:
            if process.poll() is None:
                Worker(process, log_path).kill()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_until_ready(self.log_path, self.process)

    def pids(self) -> list[int]:
        """The main process and its pool's children."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except FileNotFoundError:
            children = []
        return [self.process.pid, *map(int, children)]

    def kill(self) -> None:
        """SIGKILL the whole worker, main process and pool: nothing is left to hand its task back."""
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def stack(broker: OwnRedis, tmp_path: Path) -> Iterator[Stack]:
    processes = Stack(broker_url=broker.url, folder=tmp_path)
    yield processes
    processes.stop()


def wait_for(condition: Callable[[], bool], what: str, stack: Stack, timeout: float = 90) -> None:
    """Poll `condition`; fail naming `what`, with the tails of the processes' logs, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{stack.logs()}")
