"""A training run as two processes (`accelerate launch`, DDP over gloo on the CPU) on the tiny model: both train,
the first alone writes the metrics and the adapter, every log line reaches the caller once, and a stop ends every
process of the run."""

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from training.dpo import DPOJobConfig
from training.launch import LAUNCH_LOG, launch_command, train_launched

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]


def job_config(model: Path, dataset: Path, output_dir: Path, **overrides: Any) -> DPOJobConfig:
    return DPOJobConfig.from_dict(
        {
            "base_model": str(model),
            "dataset_path": str(dataset),
            "output_dir": str(output_dir),
            "max_steps": 3,
            "learning_rate": 1e-3,
            "max_length": 64,
            "qlora": {"lora_r": 4, "lora_alpha": 8},
            **overrides,
        }
    )


def process_lines(output_dir: Path) -> list[dict[str, Any]]:
    """The lines in which each training process said it finished its part."""
    lines = (output_dir / LAUNCH_LOG).read_text(errors="replace").splitlines()
    return sorted((json.loads(line) for line in lines if line.startswith('{"process"')), key=lambda x: x["process"])


def test_two_processes_train_one_run_and_only_the_first_writes_its_metrics_and_adapter(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "run"
    logged: list[dict[str, Any]] = []
    checkpoints: list[int] = []

    result = train_launched(
        job_config(tiny_model_dir, preference_file, output_dir, save_steps=2),
        method="dpo",
        processes=2,
        on_log=logged.append,
        on_checkpoint=lambda path, step: checkpoints.append(step),
        poll_seconds=0.2,
    )

    assert process_lines(output_dir) == [
        {"process": 0, "processes": 2, "steps": 3},
        {"process": 1, "processes": 2, "steps": 3},
    ]
    steps = [entry for entry in logged if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3], "each step's line reached the caller once"
    assert all(math.isfinite(entry["loss"]) for entry in steps)
    # Two processes of two records a step: an epoch of the 16 records is 4 steps, where one process needs 8.
    assert steps[-1]["epoch"] == pytest.approx(0.75)
    written = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert written == logged == result.metrics
    # Checkpoints are found by polling: one the trainer prunes before the next poll can pass unseen on a busy
    # machine, the last one never does.
    assert checkpoints[-1] == 3 and checkpoints == sorted(set(checkpoints)) and set(checkpoints) <= {2, 3}
    assert result.steps == 3 and not result.stopped_early and result.processes == 2
    assert result.train_loss is not None and math.isfinite(result.train_loss)
    assert result.adapter_dir == output_dir / "adapter"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert sorted(path.name for path in output_dir.iterdir() if path.name.startswith(".")) == []


def test_a_stop_ends_every_process_of_the_run(tiny_model_dir: Path, preference_file: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "run"
    logged: list[dict[str, Any]] = []

    result = train_launched(
        job_config(tiny_model_dir, preference_file, output_dir, max_steps=500),
        method="dpo",
        processes=2,
        on_log=logged.append,
        should_stop=lambda: bool(logged),
        poll_seconds=0.2,
    )

    assert result.stopped_early and 1 <= result.steps < 500
    assert not (output_dir / "adapter").exists()
    assert run_processes(str(output_dir / "job.yaml")) == [], "no process of the run is left"


def test_the_processes_of_a_run_end_when_the_process_that_launched_them_is_killed(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    # A worker killed outright cannot end the run it launched: its training processes notice and end themselves.
    output_dir = tmp_path / "run"
    config = job_config(tiny_model_dir, preference_file, output_dir, max_steps=500)
    script = (
        "import sys; from training.dpo import DPOJobConfig; from training.launch import train_launched; "
        f"train_launched(DPOJobConfig.from_dict({config.to_dict()!r}), method='dpo', processes=2)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    metrics = output_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, "the first step", timeout=240)

    launcher.kill()
    launcher.wait()

    job = str(output_dir / "job.yaml")
    wait_for(lambda: not run_processes(job), "the run's processes to end", timeout=30)


def run_processes(job: str) -> list[str]:
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and job in _command_line(pid)]


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _command_line(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_launch_command_takes_an_accelerate_config_in_place_of_plain_data_parallelism(tmp_path: Path) -> None:
    plain = launch_command(method="sft", config_path=tmp_path / "job.yaml", processes=4, port=29600)
    assert plain[plain.index("--num_processes") + 1] == "4" and "--multi_gpu" in plain
    assert plain[-4:] == ["-m", "training.sft", "--config", str(tmp_path / "job.yaml")]

    zero = launch_command(
        method="dpo",
        config_path=tmp_path / "job.yaml",
        processes=8,
        accelerate_config="training/accelerate/deepspeed_zero3.yaml",
        resume=True,
        port=29600,
    )
    assert zero[zero.index("--config_file") + 1] == "training/accelerate/deepspeed_zero3.yaml"
    assert "--multi_gpu" not in zero and zero[-1] == "--resume"
    with pytest.raises(ValueError, match="processes"):
        launch_command(method="dpo", config_path=tmp_path / "job.yaml", processes=0)
