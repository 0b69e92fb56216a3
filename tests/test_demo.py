"""`make demo`'s path on embedded defaults: SQLite, the filesystem broker and a real worker, no server at all."""

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluator.management.commands.seed_demo import demo_base_choice, demo_base_model
from tests.conftest import start_worker

REPO = Path(__file__).resolve().parent.parent


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.worker
def test_the_demo_seeds_and_generates_on_embedded_defaults_with_the_base_model_it_is_given(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env |= {
        "PREFLOOP_VAR_DIR": str(tmp_path),
        # The tiny model keeps this run short; the fallbacks to SmolLM2 and to the tiny model are tested below.
        "PREFLOOP_BASE_MODEL": str(tiny_model_dir),
        "HF_HUB_OFFLINE": "1",
    }
    manage("migrate", "--noinput", env=env)
    output = manage("seed_demo", env=env)

    assert len(re.findall(r"password: \S{12,}", output)) == 4
    assert f"Base model: {tiny_model_dir}" in output and "cannot be loaded" not in output
    assert "Created collection 'Archive handbook and fine-tuning notes' with 2 documents; indexing queued." in output
    assert "Queued generation job #1: 108 answers from 3 variants." in output
    sft = f"Queued SFT job #1: a LoRA adapter on '{tiny_model_dir.name} · greedy' from 27 Q&A pairs"
    assert sft in output
    again = manage("seed_demo", env=env)
    assert "Queued generation job" not in again and "Queued SFT job" not in again  # a second run adds nothing
    # Each run records its choice of base model and why, for the demo's progress page.
    with sqlite3.connect(tmp_path / "prefloop.sqlite3") as db:
        choices = db.execute("SELECT status, base_model, reason FROM evaluator_demopreparation ORDER BY id").fetchall()
    assert choices == [("succeeded", str(tiny_model_dir), "PREFLOOP_BASE_MODEL names it and it loads.")] * 2

    log = (tmp_path / "worker.log").open("wb")
    worker = start_worker(env, log)
    try:
        status = wait_for_generation(tmp_path / "prefloop.sqlite3", worker)
    finally:
        stop(worker)
        log.close()
    # Three variants (one retrieving from the indexed notes): three pairs per prompt.
    assert status == ("succeeded", 108, 108, 108)


def stop(worker: subprocess.Popen[bytes]) -> None:
    """A warm shutdown, or a kill after 30 s, as `make demo` stops it: on the filesystem broker the worker runs
    billiard's threaded pool, whose exit can wait forever on a queue lock that a recycled child left held (seen once
    in a full run: the main thread in ``Pool._help_stuff_finish``, on ``inqueue._rlock``)."""
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=30)


def wait_for_generation(database: Path, worker: subprocess.Popen[bytes], timeout: float = 420) -> tuple:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker died"
        with sqlite3.connect(database) as db:
            row = db.execute("SELECT status, done, total, comparisons_created FROM evaluator_generationjob").fetchone()
        if row and row[0] in ("succeeded", "failed"):
            return row
        time.sleep(0.5)
    pytest.fail(f"the demo's generation job did not finish: {row}")


@pytest.mark.training  # converts SmolLM2's GGUF into the model cache once (about 20 s), then reuses it
def test_offline_the_demo_falls_back_to_the_shipped_smollm2_and_says_why() -> None:
    lines: list[str] = []

    chosen = demo_base_model(
        wanted="prefloop-tests/no-such-model",
        fallbacks=("smollm2-135m-instruct",),
        tiny_dir=REPO / "var" / "unused-tiny",
        say=lines.append,
        warn=lines.append,
    )

    said = "\n".join(lines)
    assert chosen == "smollm2-135m-instruct"
    assert "NOTICE: base model 'prefloop-tests/no-such-model' cannot be loaded" in said
    assert "Falling back to GGUF smollm2-135m-instruct" in said and "llama" in said
    assert "Base model: smollm2-135m-instruct (ready in" in said


def test_with_no_usable_fallback_the_demo_uses_the_tiny_model_and_says_so(tmp_path: Path, tiny_model_dir: Path) -> None:
    lines: list[str] = []

    choice = demo_base_choice(
        wanted="prefloop-tests/no-such-model",
        fallbacks=(str(tmp_path / "absent.gguf"),),
        tiny_dir=tiny_model_dir,
        say=lines.append,
        warn=lines.append,
    )

    said = "\n".join(lines)
    assert choice.model == str(tiny_model_dir)
    # The reason the progress page shows names both refusals and what the tiny model is.
    assert choice.reason.startswith("prefloop-tests/no-such-model cannot be loaded (")
    assert f"{tmp_path / 'absent.gguf'} cannot be used either (" in choice.reason
    assert choice.reason.endswith("The built-in tiny model runs every step of the loop, with short, rough answers.")
    assert f"NOTICE: '{tmp_path / 'absent.gguf'}' cannot be used either" in said and "no such file" in said
    assert "built-in tiny model" in said
