"""The TrainerCallback through which a training run reports its logs and hears that it should stop."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class MetricsRelay(TrainerCallback):
    """Writes each Trainer log dict, with "step" and "max_steps" added, to `metrics_path` (one JSON object a line)
    and passes it to `on_log`; asks `should_stop` after every optimizer step and ends training when it answers True.

    `logs` keeps the dicts in order; `stopped_early` is True when `should_stop` cut the run short.
    """

    def __init__(
        self,
        metrics_path: Path,
        *,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.metrics_path = metrics_path
        self.on_log_callback = on_log
        self.should_stop = should_stop
        self.logs: list[dict[str, Any]] = []
        self.stopped_early = False
        metrics_path.write_text("")  # a rerun into the same output_dir starts a fresh stream

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


def _json_ready(logs: Mapping[str, Any]) -> dict[str, Any]:
    # Trainer logs are floats and ints, but a tensor or numpy scalar may slip in; item() makes it plain.
    return {key: value.item() if hasattr(value, "item") else value for key, value in logs.items()}
