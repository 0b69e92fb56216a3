"""Supervised fine-tuning (SFT) with QLoRA: conversations in, a LoRA adapter and a metrics stream out.

The training data is conversational JSONL, one {"messages": [{"role", "content"}, ...]} object a line, whose last
message is the assistant's answer to learn. It can be built from the chosen answers of a preference file
(`sft_records_from_preferences`) or from a Q&A file of {"question", "answer"} lines (`sft_records_from_qa`), or
read from either directly with `dataset_format`. The base model, quantisation, LoRA, checkpoints and resuming
are those of the DPO runs (training/trainer_common.py); the trainer is TRL's SFTTrainer.

Run:

    python -m training.sft --config job.yaml [--resume]

where job.yaml holds an SFTJobConfig, for instance:

    base_model: var/models/tiny
    dataset_path: var/answers.jsonl         # see dataset_format
    dataset_format: messages                # messages (default), preferences (their chosen answers) or qa
    output_dir: var/sft-run                 # gets adapter/, metrics.jsonl and checkpoints/
    max_steps: 20
    save_steps: 5
    qlora: {lora_r: 16, lora_alpha: 32}

--resume goes on from the newest complete checkpoint in output_dir/checkpoints, or starts afresh when there is
none. It prints the adapter directory on stdout and each training log line as JSON on stderr; a bad config or
dataset exits with status 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.launch import exit_with_launcher
from training.lines import read_lines
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
from training.validation import check_bool, check_choice

# torch, transformers, peft and trl are imported inside the functions that use them: the web app imports this
# module to validate job configs and read Q&A files, and should not load them for that.
if TYPE_CHECKING:
    from trl import SFTConfig, SFTTrainer

DATASET_FORMATS = ("messages", "preferences", "qa")
ROLES = ("system", "user", "assistant")


class SFTFileError(ValueError):
    """An SFT or Q&A JSONL file that cannot be trained on; the message names the line and the problem."""


@dataclass
class SFTJobConfig(TrainingJobConfig):
    """Everything one SFT run needs (the shared fields are described on TrainingJobConfig).

    `dataset_format` says what `dataset_path` holds: "messages" ({"messages": [...]} conversations),
    "preferences" (a preference file, whose chosen answers are learnt) or "qa" ({"question", "answer"} lines).
    With `completion_only_loss` (the default) only the final assistant answer is learnt, not the prompt.
    """

    learning_rate: float = 2e-4
    dataset_format: str = "messages"
    completion_only_loss: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("dataset_format", self.dataset_format, DATASET_FORMATS)
        check_bool("completion_only_loss", self.completion_only_loss)


def train_sft(
    config: SFTJobConfig,
    *,
    on_log: LogCallback | None = None,
    should_stop: StopCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    resume_from_checkpoint: str | Path | None = None,
) -> TrainingResult:
    """Train a LoRA adapter with SFT on `config.dataset_path` and save it to `output_dir/adapter`.

    The callbacks and resuming work as in training.dpo.train_dpo: `on_log` gets every training log dict (also
    written to output_dir/metrics.jsonl), `should_stop` is asked after every optimizer step, `on_checkpoint(path,
    step)` hears of every complete checkpoint, and `resume_from_checkpoint` goes on from a checkpoint folder.
    """
    records = sft_records(config)
    resume = checked_checkpoint(resume_from_checkpoint)  # refused before the trainer writes anything
    trainer = build_sft_trainer(config, records)
    return run_trainer(
        config,
        trainer,
        on_log=on_log,
        should_stop=should_stop,
        on_checkpoint=on_checkpoint,
        resume_from_checkpoint=resume,
    )


def build_sft_trainer(config: SFTJobConfig, records: Sequence[Mapping[str, Any]]) -> SFTTrainer:
    """A ready-to-train SFTTrainer on {"messages": [...]} records: seeds set, the base quantised and prepared,
    LoRA attached. Resuming keeps the adapter's dtype (training.trainers)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed

    from training.device import pick_device
    from training.models import resolve_model
    from training.trainers import QLoRASFTTrainer

    rows = [_training_row(record, completion_only=config.completion_only_loss) for record in records]
    # The trainer seeds itself, but only after creating the LoRA weights; seeding first makes them repeatable.
    set_seed(config.seed)
    device = pick_device()
    return QLoRASFTTrainer(
        model=load_base_for_training(config, device),
        args=sft_arguments(config, device),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(resolve_model(config.base_model)),
        peft_config=lora_config(config.qlora),
    )


def sft_arguments(config: SFTJobConfig, device: str) -> SFTConfig:
    """TRL's SFTConfig for the job: the shared training arguments, no packing, the loss on the answers only
    when the config asks."""
    from trl import SFTConfig

    return SFTConfig(
        **training_arguments(config, device), completion_only_loss=config.completion_only_loss, packing=False
    )


def sft_records(config: SFTJobConfig) -> list[dict[str, Any]]:
    """The {"messages": [...]} records of the config's dataset, read as its dataset_format says."""
    readers: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
        "messages": read_sft_jsonl,
        "preferences": sft_records_from_preferences,
        "qa": sft_records_from_qa,
    }
    return readers[config.dataset_format](Path(config.dataset_path))


def sft_records_from_preferences(path: Path) -> list[dict[str, Any]]:
    """One {"messages": prompt + chosen} record per preference record of a TRL preference JSONL, in file order.

    Raises PreferenceFileError (a ValueError) naming the line and the problem, as read_preference_jsonl does.
    """
    return [{"messages": [*record["prompt"], *record["chosen"]]} for record in read_preference_jsonl(path)]


def sft_records_from_qa(path: Path) -> list[dict[str, Any]]:
    """One {"messages": [user question, assistant answer]} record per line of a {"question", "answer"} JSONL.

    Blank lines are skipped and other keys ignored. Raises SFTFileError naming the line and the problem: invalid
    JSON, not an object, a missing, non-string or empty question or answer, or a file without any line.
    """

    def record(entry: Any) -> tuple[dict[str, Any] | None, str | None]:
        if not isinstance(entry, dict):
            return None, f"expected a JSON object, got {type(entry).__name__}"
        missing = [key for key in ("question", "answer") if key not in entry]
        if missing:
            return None, f"missing key(s): {', '.join(missing)}"
        for key in ("question", "answer"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                return None, f"{key} must be a non-empty string, got {entry[key]!r}"
        messages = [
            {"role": "user", "content": entry["question"]},
            {"role": "assistant", "content": entry["answer"]},
        ]
        return {"messages": messages}, None

    return _read_jsonl(Path(path), record, what="question-answer")


def read_sft_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read and check a {"messages": [...]} JSONL file; blank lines are skipped, keys beyond messages dropped.

    Raises SFTFileError naming the line and the problem: invalid JSON, no messages list, a message that is not
    {"role", "content"} with a known role and string content, no user message, or a last message that is not a
    non-empty assistant answer.
    """

    def record(entry: Any) -> tuple[dict[str, Any] | None, str | None]:
        if not isinstance(entry, dict):
            return None, f"expected a JSON object, got {type(entry).__name__}"
        problem = _messages_problem(entry.get("messages"))
        return ({"messages": entry["messages"]}, None) if problem is None else (None, problem)

    return _read_jsonl(Path(path), record, what="conversation")


def _read_jsonl(
    path: Path, parse: Callable[[Any], tuple[dict[str, Any] | None, str | None]], *, what: str
) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise SFTFileError(f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno})") from None
        record, problem = parse(entry)
        if record is None:
            raise SFTFileError(f"{path}, line {number}: {problem}")
        records.append(record)
    if not records:
        raise SFTFileError(f"{path}: the file is empty; it holds no {what} records")
    return records


def _messages_problem(messages: object) -> str | None:
    if not isinstance(messages, list) or not messages:
        return 'messages: expected a non-empty list of {"role", "content"} messages'
    for position, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return f'messages: message {position}: expected an object with exactly the keys "role" and "content"'
        if message["role"] not in ROLES:
            return f"messages: message {position}: role must be {' or '.join(ROLES)}, got {message['role']!r}"
        if not isinstance(message["content"], str):
            return f"messages: message {position}: content must be a string"
    if not any(message["role"] == "user" for message in messages):
        return "messages: there is no user message"
    last = messages[-1]
    if last["role"] != "assistant" or not last["content"].strip():
        return "messages: the last message must be the assistant's non-empty answer"
    return None


def _training_row(record: Mapping[str, Any], *, completion_only: bool) -> dict[str, Any]:
    # TRL computes the loss on the completion only for prompt-completion records: split off the final answer.
    messages = list(record["messages"])
    if completion_only:
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    return {"messages": messages}


def _print_log(entry: dict[str, Any]) -> None:
    print(json.dumps(entry), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="YAML file holding an SFTJobConfig")
    parser.add_argument(
        "--resume", action="store_true", help="go on from the newest complete checkpoint in output_dir, if any"
    )
    args = parser.parse_args(argv)
    exit_with_launcher()  # a no-op unless a worker launched this run (training.launch)
    try:
        config = SFTJobConfig.from_yaml(args.config)
    except (ValueError, OSError) as error:
        parser.error(f"bad config {args.config}: {error}")
    try:
        sft_records(config)
    except (SFTFileError, PreferenceFileError, OSError) as error:
        parser.error(f"bad dataset: {error}")
    resume = latest_checkpoint(config.checkpoint_dir) if args.resume else None
    result = train_sft(config, on_log=_print_log, resume_from_checkpoint=resume)
    announce_process(result)
    if result.process_index == 0:
        print(result.adapter_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
