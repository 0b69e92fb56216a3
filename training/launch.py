"""A training run as several processes: `accelerate launch` of training.dpo or training.sft, watched from outside.

One process trains on one device; `accelerate launch` starts several (one per GPU, data parallel: DDP, or sharded:
DeepSpeed ZeRO, FSDP-QLoRA, as its config file says; on a machine without GPUs, CPU processes over gloo). The
first process writes the run's files (metrics.jsonl, checkpoints, adapter/); `train_launched` follows them while the
processes run, so the caller hears every log line and checkpoint as a single-process run's callbacks would, and
when `should_stop` answers True it ends every process of the run (they run in a process group of their own).

Run (what `train_launched` starts):

    accelerate launch --num_processes 2 [--config_file training/accelerate/ddp.yaml] \\
        -m training.dpo --config output_dir/job.yaml [--resume]

training/accelerate/ holds example configs; docs/deployment.md says when to use which.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import yaml

from training.trainer_common import (
    CheckpointCallback,
    LogCallback,
    StopCallback,
    TrainingJobConfig,
    TrainingResult,
    checked_checkpoint,
    checkpoint_step,
    latest_checkpoint,
)
from training.validation import check_choice, check_int

METHODS = ("dpo", "sft")
LAUNCH_LOG = "launch.log"
# How long the processes get to end on SIGTERM before they are killed.
STOP_GRACE_SECONDS = 10.0
# The process that launched a run, which its training processes watch (exit_with_launcher), and how often.
LAUNCHER_ENV = "PREFLOOP_TRAINING_LAUNCHER_PID"
LAUNCHER_WATCH_SECONDS = 2.0


class LaunchError(RuntimeError):
    """The launched run failed; the message ends with the tail of its log."""


def launch_command(
    *,
    method: str,
    config_path: Path,
    processes: int,
    accelerate_config: str | Path | None = None,
    resume: bool = False,
    port: int | None = None,
) -> list[str]:
    """The `accelerate launch` command line of a run of `method` ("dpo" or "sft") on `processes` processes.

    Without an accelerate config file the processes are data parallel (DDP): on GPUs one each, on a machine without
    one over CPU and gloo. With one, the file decides (DeepSpeed, FSDP, mixed precision, ...) and `processes`
    overrides its num_processes. `port` is the rendezvous port (a free one by default, so that two runs on one
    machine do not meet).
    """
    check_choice("method", method, METHODS)
    check_int("processes", processes, minimum=1)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    command += ["--main_process_port", str(port or free_port())]
    if accelerate_config:
        command += ["--config_file", str(accelerate_config)]
    else:
        # torchrun's launcher, whatever the device; the training arguments choose bf16 themselves.
        command += ["--multi_gpu"] if processes > 1 else []
        command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["-m", f"training.{method}", "--config", str(config_path)]
    return command + (["--resume"] if resume else [])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def train_launched(
    config: TrainingJobConfig,
    *,
    method: str,
    processes: int,
    accelerate_config: str | Path | None = None,
    on_log: LogCallback | None = None,
    should_stop: StopCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    resume_from_checkpoint: str | Path | None = None,
    poll_seconds: float = 1.0,
) -> TrainingResult:
    """Train `config` as `processes` processes (`launch_command`) and return what a single-process run returns.

    The config goes to output_dir/job.yaml; the processes' output to output_dir/launch.log. Every new line of
    metrics.jsonl goes to `on_log`, every new complete checkpoint to `on_checkpoint`, within `poll_seconds`.
    `should_stop` is asked as often: when it answers True every process of the run is ended and the result says
    `stopped_early`, with no adapter saved (a single process would save its partial one; here the last checkpoint
    is what is kept). `resume_from_checkpoint` (the newest complete checkpoint in output_dir) resumes. A run whose
    processes fail raises LaunchError with the tail of the log.
    """
    resume = checked_checkpoint(resume_from_checkpoint)
    start_step = checkpoint_step(resume) if resume is not None else 0
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "job.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    command = launch_command(
        method=method,
        config_path=config_path,
        processes=processes,
        accelerate_config=accelerate_config,
        resume=resume is not None,
    )
    metrics = _MetricsFollower(output_dir / "metrics.jsonl", resume_step=start_step if resume is not None else None)
    checkpoints = _CheckpointFollower(config, reported=resume)
    log_path = output_dir / LAUNCH_LOG
    with log_path.open("ab") as log:
        # A session of its own: the launcher, its agent and every training process share one process group.
        run = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=_importable_env(), start_new_session=True
        )
    stopped = False
    try:
        while run.poll() is None:
            time.sleep(poll_seconds)
            metrics.relay(on_log)
            checkpoints.relay(on_checkpoint)
            if should_stop is not None and run.poll() is None and should_stop():
                stopped = True
                end_process_group(run)
    finally:
        if run.poll() is None:
            end_process_group(run)
    metrics.relay(on_log)
    checkpoints.relay(on_checkpoint)
    if stopped:
        return _result(output_dir, metrics.logs, start_step, stopped_early=True, processes=processes)
    if run.returncode != 0:
        raise LaunchError(f"the training processes failed (exit status {run.returncode}):\n{_tail(log_path)}")
    return _result(output_dir, metrics.logs, start_step, stopped_early=False, processes=processes)


def end_process_group(run: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the run's process group (the launcher passes it on to the training processes), SIGKILL whatever of
    the run is left after `grace` seconds, and reap the launcher.

    torchrun starts each training process in a session of its own, outside the launcher's group: they are looked up
    as the launcher's descendants first, so that none is missed should the launcher die before passing the signal on.
    """
    processes = descendants(run.pid)
    group = run.pid  # start_new_session: the leader's pid is the group's id
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (group_alive(group) or any(map(_alive, processes))):
        with suppress(subprocess.TimeoutExpired):
            run.wait(timeout=0.1)
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    for pid in processes:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    run.wait()


def group_alive(group: int) -> bool:
    """True while any process of the group `group` is left (zombies not yet reaped included)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def descendants(pid: int) -> list[int]:
    """The ids of the processes below `pid` (Linux /proc; none elsewhere)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with suppress(OSError):
                children = [int(child) for child in (task / "children").read_text().split()]
                found += children
                pending += children
    return found


def exit_with_launcher() -> None:
    """In a training process of a launched run: end this process when the process that launched the run is gone.

    A worker killed outright (SIGKILL, out of memory) cannot end the run's processes, and torchrun's run in sessions
    of their own; without this they would train on, beside the run the job's next attempt starts.
    """
    watched = os.environ.get(LAUNCHER_ENV)
    if not watched:
        return

    def watch() -> None:
        while _alive(int(watched)):
            time.sleep(LAUNCHER_WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] == "Z"


class _MetricsFollower:
    """Reads the lines the first process appends to metrics.jsonl, once each.

    The training process rewrites the file when it starts (a fresh run empties it, a resumed one keeps the lines up
    to its checkpoint); it is rewritten here the same way first, so that the lines that follow are the new ones."""

    def __init__(self, path: Path, *, resume_step: int | None) -> None:
        from training.metrics_relay import step_lines

        self.path = path
        kept = step_lines(path, up_to=resume_step) if resume_step is not None else []
        path.write_text("".join(kept), encoding="utf-8")
        self.offset = path.stat().st_size
        self.logs: list[dict[str, Any]] = []

    def relay(self, on_log: Callable[[dict[str, Any]], None] | None) -> None:
        with self.path.open("rb") as stream:
            stream.seek(self.offset)
            chunk = stream.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            entry = json.loads(line)
            self.logs.append(entry)
            if on_log is not None:
                on_log(entry)


class _CheckpointFollower:
    """Reports each checkpoint newer than the last one reported, once it is complete."""

    def __init__(self, config: TrainingJobConfig, *, reported: Path | None) -> None:
        self.folder = config.checkpoint_dir
        self.step = checkpoint_step(reported) if reported is not None else 0

    def relay(self, on_checkpoint: CheckpointCallback | None) -> None:
        newest = latest_checkpoint(self.folder)
        if newest is None or checkpoint_step(newest) <= self.step:
            return
        self.step = checkpoint_step(newest)
        if on_checkpoint is not None:
            on_checkpoint(newest, self.step)


def _result(
    output_dir: Path, logs: list[dict[str, Any]], start_step: int, *, stopped_early: bool, processes: int
) -> TrainingResult:
    steps = max((int(entry.get("step", 0)) for entry in logs), default=start_step)
    summary = next((entry for entry in reversed(logs) if "train_loss" in entry), None)
    return TrainingResult(
        adapter_dir=output_dir / "adapter",
        steps=steps,
        metrics=logs,
        train_loss=summary["train_loss"] if summary is not None and steps > start_step else None,
        stopped_early=stopped_early,
        start_step=start_step,
        processes=processes,
    )


def _importable_env() -> dict[str, str]:
    # The processes run `-m training.dpo` from the caller's working directory (the config's relative paths are
    # read from there), which need not be the folder holding the training package.
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), LAUNCHER_ENV: str(os.getpid())}


def _tail(path: Path, size: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-size:]
