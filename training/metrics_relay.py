"""The TrainerCallback through which a training run reports its logs and checkpoints and hears that it should
stop."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from training.lines import read_lines


class MetricsRelay(TrainerCallback):
    """Writes each Trainer log dict, with "step" and "max_steps" added, to `metrics_path` (one JSON object a line)
    and passes it to `on_log`; asks `should_stop` after every optimizer step and ends training when it answers True;
    calls `on_checkpoint(path, step)` once a checkpoint is completely written.

    A run that resumes from the checkpoint of step `resume_step` keeps the lines of `metrics_path` up to that step
    (the steps after it are trained and logged again) and drops the summary line of the run it continues.
    Otherwise the file starts empty. `logs` keeps this run's dicts in order; `stopped_early` is True when
    `should_stop` cut the run short. With `record` False (every process of a multi-process run but the first) the
    relay neither writes the file nor passes logs and checkpoints on: the first process reports for all.
    """

    def __init__(
        self,
        metrics_path: Path,
        *,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_checkpoint: Callable[[Path, int], None] | None = None,
        resume_step: int | None = None,
        record: bool = True,
    ) -> None:
        self.metrics_path = metrics_path
        self.record = record
        self.on_log_callback = on_log
        self.should_stop = should_stop
        self.on_checkpoint = on_checkpoint
        self.logs: list[dict[str, Any]] = []
        self.stopped_early = False
        if not record:
            return
        kept = step_lines(metrics_path, up_to=resume_step) if resume_step is not None else []
        # Rewritten beside and renamed, so that a crash here cannot lose the lines being kept.
        partial = metrics_path.with_name(f".{metrics_path.name}.partial")
        partial.write_text("".join(kept), encoding="utf-8")
        os.replace(partial, metrics_path)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        entry = {"step": state.global_step, "max_steps": state.max_steps, **_json_ready(logs or {})}
        self.logs.append(entry)
        if not self.record:
            return
        # Appended and closed line by line, so the file is complete up to the last log even after a crash.
        with self.metrics_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        if self.on_log_callback is not None:
            self.on_log_callback(entry)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        # After the planned last step the run ends anyway; a stop request then does not make it "early".
        if self.should_stop is None or state.global_step >= state.max_steps:
            return
        if self.should_stop():
            self.stopped_early = True
            control.should_training_stop = True
            # With checkpoints on, the step a stop ends at gets one too, so that nothing trained is lost.
            control.should_save = control.should_save or args.save_strategy != "no"

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        # The Trainer calls this after it wrote the checkpoint whole (trainer_state.json last) and rotated the old.
        if self.on_checkpoint is not None and self.record:
            # Typed optional, but TrainingArguments fills in a default: a Trainer that saves has an output_dir.
            assert args.output_dir is not None
            self.on_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)


def _json_ready(logs: Mapping[str, Any]) -> dict[str, Any]:
    # Trainer logs are floats and ints, but a tensor or numpy scalar may slip in; item() makes it plain.
    return {key: value.item() if hasattr(value, "item") else value for key, value in logs.items()}


def step_lines(metrics_path: Path, *, up_to: int) -> list[str]:
    """The lines of step logs at or before step `up_to`; end-of-run summaries (train_runtime, ...) are left out."""
    if not metrics_path.exists():
        return []
    kept = []
    for line in read_lines(metrics_path):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a process killed while writing it
        if isinstance(entry, dict) and entry.get("step", up_to + 1) <= up_to and "train_runtime" not in entry:
            kept.append(line + "\n")
    return kept
