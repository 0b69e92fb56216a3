"""DPO with QLoRA: a preference JSONL and a base model in, a LoRA adapter and a metrics stream out.

The base model is loaded in 4-bit NF4 with double quantisation and frozen; only LoRA adapters on its linear
layers train, with TRL's DPOTrainer and a paged 8-bit AdamW. The reference model is the base with the adapter
switched off, so no second copy is held in memory. Runs on CPU (slowly, fine for the tiny model) or on one
CUDA GPU.

Run:

    python -m training.dpo --config job.yaml [--resume]

where job.yaml holds a DPOJobConfig, for instance:

    base_model: var/models/tiny
    dataset_path: var/preferences.jsonl     # TRL conversational preference records (training/preferences.py)
    output_dir: var/dpo-run                 # gets adapter/, metrics.jsonl and checkpoints/
    beta: 0.1
    max_steps: 20
    save_steps: 5                           # a checkpoint every 5 steps, the newest save_total_limit kept
    qlora: {lora_r: 16, lora_alpha: 32}

--resume goes on from the newest complete checkpoint in output_dir/checkpoints (a run that was killed, say), or
starts afresh when there is none. It prints the adapter directory on stdout and each training log line as JSON on
stderr; a bad config or dataset exits with status 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.launch import exit_with_launcher
from training.preferences import PreferenceFileError, read_preference_jsonl
from training.trainer_common import (
    CheckpointCallback,
    LogCallback,
    StopCallback,
    TrainingJobConfig,
    TrainingResult,
    announce_process,
    checked_checkpoint,
    latest_checkpoint,
    load_base_for_training,
    lora_config,
    run_trainer,
    training_arguments,
)
from training.validation import check_number

# torch, transformers, peft and trl are imported inside the functions that use them: the web app imports this
# module to validate job configs and should not load them for that.
if TYPE_CHECKING:
    from trl import DPOConfig, DPOTrainer


@dataclass
class DPOJobConfig(TrainingJobConfig):
    """Everything one DPO run needs (the shared fields are described on TrainingJobConfig); `beta` is DPO's
    temperature: how far the policy may move from the reference for a given preference margin."""

    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("beta", self.beta, above=0.0)


def train_dpo(
    config: DPOJobConfig,
    *,
    on_log: LogCallback | None = None,
    should_stop: StopCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    resume_from_checkpoint: str | Path | None = None,
) -> TrainingResult:
    """Train a LoRA adapter with DPO on `config.dataset_path` and save it to `output_dir/adapter`.

    Every training log dict (loss, rewards, learning rate, ..., plus "step") goes to `on_log` and, one JSON
    object a line, to `output_dir/metrics.jsonl`. `should_stop` is asked after every optimizer step; when it
    returns True the run ends after that step (with a checkpoint of it when save_steps > 0) and the adapter
    trained so far is saved. `on_checkpoint(path, step)` hears of every checkpoint once it is complete.
    `resume_from_checkpoint` (a checkpoint folder, `latest_checkpoint(output_dir)` for instance) goes on from
    there: same data order, RNG and optimizer state, its steps not trained or logged again.
    """
    records = read_preference_jsonl(Path(config.dataset_path))
    resume = checked_checkpoint(resume_from_checkpoint)  # refused before the trainer writes anything
    trainer = build_dpo_trainer(config, records)
    return run_trainer(
        config,
        trainer,
        on_log=on_log,
        should_stop=should_stop,
        on_checkpoint=on_checkpoint,
        resume_from_checkpoint=resume,
    )


def build_dpo_trainer(config: DPOJobConfig, records: Sequence[Mapping[str, Any]]) -> DPOTrainer:
    """A ready-to-train DPOTrainer on TRL preference records: seeds set, the base quantised and prepared, LoRA
    attached. Resuming keeps the adapter's dtype (training.trainers)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed

    from training.device import pick_device
    from training.models import resolve_model
    from training.trainers import QLoRADPOTrainer

    # The trainer seeds itself, but only after creating the LoRA weights; seeding first makes them repeatable.
    set_seed(config.seed)
    device = pick_device()
    return QLoRADPOTrainer(
        model=load_base_for_training(config, device),
        args=dpo_arguments(config, device),
        train_dataset=Dataset.from_list([dict(record) for record in records]),
        processing_class=AutoTokenizer.from_pretrained(resolve_model(config.base_model)),
        peft_config=lora_config(config.qlora),
    )


def dpo_arguments(config: DPOJobConfig, device: str) -> DPOConfig:
    """TRL's DPOConfig for the job: the shared training arguments plus beta."""
    from trl import DPOConfig

    return DPOConfig(**training_arguments(config, device), beta=config.beta)


def _print_log(entry: dict[str, Any]) -> None:
    print(json.dumps(entry), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dpo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="YAML file holding a DPOJobConfig")
    parser.add_argument(
        "--resume", action="store_true", help="go on from the newest complete checkpoint in output_dir, if any"
    )
    args = parser.parse_args(argv)
    exit_with_launcher()  # a no-op unless a worker launched this run (training.launch)
    try:
        config = DPOJobConfig.from_yaml(args.config)
    except (ValueError, OSError) as error:
        parser.error(f"bad config {args.config}: {error}")
    try:
        read_preference_jsonl(Path(config.dataset_path))
    except (PreferenceFileError, OSError) as error:
        parser.error(f"bad dataset: {error}")
    resume = latest_checkpoint(config.checkpoint_dir) if args.resume else None
    result = train_dpo(config, on_log=_print_log, resume_from_checkpoint=resume)
    announce_process(result)
    if result.process_index == 0:
        print(result.adapter_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
