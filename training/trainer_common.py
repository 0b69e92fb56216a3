"""What the DPO and SFT runs share: the QLoRA settings, the job config fields, loading the 4-bit base, the LoRA
config, running a built trainer with the job's callbacks (run_trainer), checkpoints and resuming, and saving the
adapter so that it appears complete or not at all.

A run writes into its `output_dir`: `adapter/` (the product), `metrics.jsonl` (the log stream) and, when
`save_steps` > 0, `checkpoints/checkpoint-<step>/` (Trainer checkpoints: adapter, optimizer, scheduler, RNG
states, trainer_state.json). The Trainer writes trainer_state.json last, so a checkpoint folder holding a valid
one is complete; `latest_checkpoint` returns the newest such folder and skips any a killed process left half
written. Resuming from it continues the same run: the same data order, RNG states and optimizer state.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import yaml

from training.validation import check_bool, check_choice, check_int, check_known_keys, check_number, is_int

# torch, transformers and peft are imported inside the functions that use them: the web app imports the config
# classes to validate job settings and should not load them for that.
if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

QUANT_TYPES = ("nf4", "fp4")
# Optimizers known to work with a 4-bit base here; the paged ones ride out memory spikes on a GPU.
OPTIMIZERS = ("paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit", "adamw_torch", "sgd")
CHECKPOINT_PREFIX = "checkpoint-"
# The folder of a job's output_dir that holds its checkpoint-<step> folders.
CHECKPOINTS_FOLDER = "checkpoints"
TRAINER_STATE = "trainer_state.json"

LogCallback = Callable[[dict[str, Any]], None]
StopCallback = Callable[[], bool]
CheckpointCallback = Callable[[Path, int], None]


# Where training logs may go besides the job's own metrics stream; each needs its package on the worker.
REPORTERS = ("none", "tensorboard", "mlflow")


@dataclass
class QLoRASettings:
    """How the base model is quantised and where the LoRA adapters go."""

    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def __post_init__(self) -> None:
        check_bool("load_in_4bit", self.load_in_4bit)
        check_choice("quant_type", self.quant_type, QUANT_TYPES)
        check_bool("double_quant", self.double_quant)
        check_int("lora_r", self.lora_r, minimum=1)
        check_int("lora_alpha", self.lora_alpha, minimum=1)
        check_number("lora_dropout", self.lora_dropout, minimum=0.0, below=1.0)
        self.target_modules = _checked_target_modules(self.target_modules)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QLoRASettings:
        """Settings from a plain mapping; unknown keys are refused."""
        check_known_keys("qlora", data, cls)
        return cls(**data)


@dataclass
class TrainingJobConfig:
    """The fields every QLoRA training job has. Paths are read relative to the working directory.

    save_steps > 0 writes a Trainer checkpoint every that many steps (and at the last one) under
    output_dir/checkpoints, keeping the newest save_total_limit; the default 0 writes none: the adapter saved at
    the end is the product, and checkpoints of a small run only cost disk.
    """

    base_model: str
    dataset_path: str
    output_dir: str
    learning_rate: float = 5e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    seed: int = 42
    logging_steps: int = 1
    optim: str = "paged_adamw_8bit"
    save_steps: int = 0
    save_total_limit: int = 2
    # "tensorboard" writes event files under the Trainer's folder (runs/; TENSORBOARD_LOGGING_DIR elsewhere);
    # "mlflow" logs to MLFLOW_TRACKING_URI (or ./mlruns).
    report_to: str = "none"
    qlora: QLoRASettings = field(default_factory=QLoRASettings)

    def __post_init__(self) -> None:
        self.base_model = _checked_text("base_model", self.base_model)
        self.dataset_path = _checked_text("dataset_path", self.dataset_path)
        self.output_dir = _checked_text("output_dir", self.output_dir)
        check_number("learning_rate", self.learning_rate, above=0.0, below=1.0)
        check_number("num_train_epochs", self.num_train_epochs, above=0.0)
        if not (is_int(self.max_steps) and (self.max_steps == -1 or self.max_steps >= 1)):
            raise ValueError(
                f"max_steps must be -1 (train num_train_epochs) or an integer >= 1, got {self.max_steps!r}"
            )
        check_int("per_device_train_batch_size", self.per_device_train_batch_size, minimum=1)
        check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, minimum=1)
        check_int("max_length", self.max_length, minimum=8)
        check_int("seed", self.seed, minimum=0)
        check_int("logging_steps", self.logging_steps, minimum=1)
        check_choice("optim", self.optim, OPTIMIZERS)
        check_int("save_steps", self.save_steps, minimum=0)
        check_int("save_total_limit", self.save_total_limit, minimum=1)
        check_choice("report_to", self.report_to, REPORTERS)
        if not isinstance(self.qlora, QLoRASettings):
            raise ValueError(f"qlora must be QLoRASettings, got {type(self.qlora).__name__}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A config from a plain mapping, with qlora as a nested mapping; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError(f"the config must be a mapping, got {type(data).__name__}")
        check_known_keys("config", data, cls)
        values = dict(data)
        qlora = values.pop("qlora", None) or {}
        if not isinstance(qlora, Mapping):
            raise ValueError(f"qlora must be a mapping, got {type(qlora).__name__}")
        try:
            settings = QLoRASettings.from_dict(qlora)
        except ValueError as error:
            raise ValueError(f"qlora.{error}") from None
        missing = [name for name in ("base_model", "dataset_path", "output_dir") if name not in values]
        if missing:
            raise ValueError(f"missing required key(s): {', '.join(missing)}")
        return cls(**values, qlora=settings)

    @classmethod
    def from_yaml(cls, path: Path) -> Self:
        """A config from a YAML file holding one mapping."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ValueError(f"not valid YAML: {error}") from None
        return cls.from_dict(data if data is not None else {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def checkpoint_dir(self) -> Path:
        """Where the run's checkpoint-<step> folders go."""
        return Path(self.output_dir) / CHECKPOINTS_FOLDER


@dataclass
class TrainingResult:
    """What a run produced.

    `steps` is the optimizer step the run ended at, counted from the start of training (a resumed run counts
    the steps before its checkpoint too); `start_step` is the step it started from: 0, or the checkpoint's.
    `metrics` are this run's log dicts in order (each with "step"); `train_loss` is the mean loss of this run's
    steps. `stopped_early` is True when should_stop ended the run before its planned last step; the adapter
    saved then is the partial one.
    """

    adapter_dir: Path
    steps: int
    metrics: list[dict[str, Any]]
    train_loss: float | None
    stopped_early: bool
    start_step: int = 0
    # Under `accelerate launch`, how many processes trained together and which of them this one was; only the
    # first (0) writes the metrics stream and the adapter.
    processes: int = 1
    process_index: int = 0


def announce_process(result: TrainingResult) -> None:
    """Say on stderr, as one JSON line, that this process finished its part of the run: under `accelerate launch`
    every process says so, which shows how many trained."""
    line = {"process": result.process_index, "processes": result.processes, "steps": result.steps}
    # One write, newline included: the processes share one stderr (the launcher's log, opened for appending), and
    # print writes a line and its newline apart, so two processes' lines could run together.
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()


def run_trainer(
    config: TrainingJobConfig,
    trainer: Trainer,
    *,
    on_log: LogCallback | None = None,
    should_stop: StopCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    resume_from_checkpoint: str | Path | None = None,
) -> TrainingResult:
    """Train `trainer` (built for `config`) with the job's callbacks and save its adapter to output_dir/adapter.

    Every log dict (with "step" and "max_steps") goes to `on_log` and to output_dir/metrics.jsonl, in place of
    the Trainer's own printing; `should_stop` is asked after every optimizer step; `on_checkpoint(path, step)`
    hears of every complete checkpoint (see MetricsRelay). A fresh run (no checkpoint to resume from) first
    removes the checkpoints an earlier run left in output_dir, so that `latest_checkpoint` can never hand a later
    resume a checkpoint of another run. A resumed run removes the half-written ones and those past its
    checkpoint, and keeps the metrics.jsonl lines up to its step.
    """
    from transformers import PrinterCallback

    from training.metrics_relay import MetricsRelay

    resume = checked_checkpoint(resume_from_checkpoint)
    start_step = checkpoint_step(resume) if resume is not None else 0
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Several processes (accelerate launch) train one run: the first writes its files, the others only train.
    first = trainer.is_world_process_zero()
    if first:
        _discard_checkpoints(config.checkpoint_dir, keep_up_to=start_step if resume is not None else None)
    relay = MetricsRelay(
        output_dir / "metrics.jsonl",
        on_log=on_log,
        should_stop=should_stop,
        on_checkpoint=on_checkpoint,
        resume_step=start_step if resume is not None else None,
        record=first,
    )
    trainer.add_callback(relay)
    # With progress bars off the Trainer prints every log dict to stdout; the relay reports them instead.
    trainer.remove_callback(PrinterCallback)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    adapter_dir = output_dir / "adapter"
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        save_sharded_adapter(trainer, adapter_dir)
    elif first:
        save_adapter(trainer, adapter_dir)
    # No process ends before the adapter is saved: the launcher reads a run as done once every process exited.
    trainer.accelerator.wait_for_everyone()
    steps = trainer.state.global_step
    trained = steps > start_step and math.isfinite(output.training_loss)
    return TrainingResult(
        adapter_dir=adapter_dir,
        steps=steps,
        metrics=list(relay.logs),
        train_loss=output.training_loss if trained else None,
        stopped_early=relay.stopped_early,
        start_step=start_step,
        processes=trainer.args.world_size,
        process_index=trainer.args.process_index,
    )


def training_arguments(config: TrainingJobConfig, device: str) -> dict[str, Any]:
    """The TrainingArguments values DPO and SFT share: reporting only when asked (report_to), checkpoints only
    when asked, bf16 only on CUDA."""
    # The Trainer creates its output_dir up front; aim it at the checkpoints folder only when there will be any.
    trainer_dir = config.checkpoint_dir if config.save_steps else Path(config.output_dir)
    return {
        "output_dir": str(trainer_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "optim": config.optim,
        "use_cpu": device == "cpu",
        # TRL turns bf16 on by default; on a CPU it would emulate bfloat16 slowly and less exactly.
        "bf16": device.startswith("cuda"),
        "report_to": config.report_to,
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "save_total_limit": config.save_total_limit,
        # The metrics stream is the progress report; progress bars would only fill the worker's log.
        "disable_tqdm": True,
    }


def load_base_for_training(config: TrainingJobConfig, device: str) -> PreTrainedModel:
    """The base model on `device`, quantised to 4 bits and prepared for k-bit training if the config asks.
    `config.base_model` may be any spec training.models resolves (a GGUF is converted once, then cached)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from training.device import compute_dtype
    from training.models import resolve_model

    dtype = compute_dtype(device)
    qlora = config.qlora
    sharded = weights_sharded()
    quantization = None
    if qlora.load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=qlora.quant_type,
            bnb_4bit_use_double_quant=qlora.double_quant,
            bnb_4bit_compute_dtype=dtype,
            # FSDP and ZeRO-3 shard floating-point tensors only: the packed 4-bit weights are stored in the
            # compute dtype so that they shard with the rest (bitsandbytes' FSDP-QLoRA guide).
            **({"bnb_4bit_quant_storage": dtype} if sharded else {}),
        )
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(config.base_model),
        dtype=dtype,
        device_map=weights_placement(device, sharded=sharded),
        quantization_config=quantization,
    )
    if qlora.load_in_4bit:
        # Freezes the quantised weights, keeps norms in float32 and enables gradient checkpointing with input
        # gradients, without which no gradient would reach the adapters through a frozen, checkpointed base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


def weights_sharded() -> bool:
    """True when `accelerate launch` runs this process with FSDP or DeepSpeed ZeRO-3, which shard the weights."""
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    return fsdp or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"


def weights_placement(device: str, *, sharded: bool) -> str | dict[str, int] | None:
    """from_pretrained's device_map: none when FSDP or ZeRO-3 place the shards themselves; under data parallelism
    on GPUs (`accelerate launch`, LOCAL_RANK set) the whole model on this process's own GPU; else `device`."""
    if sharded:
        return None
    local_rank = os.environ.get("LOCAL_RANK")
    if device.startswith("cuda") and local_rank is not None:
        return {"": int(local_rank)}
    return device


def lora_config(qlora: QLoRASettings) -> Any:
    """The peft LoraConfig for the settings."""
    from peft import LoraConfig

    return LoraConfig(
        r=qlora.lora_r,
        lora_alpha=qlora.lora_alpha,
        lora_dropout=qlora.lora_dropout,
        target_modules=qlora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def save_adapter(trainer: Trainer, adapter_dir: Path) -> Path:
    """Save the trained adapter (adapter_config.json, adapter_model.safetensors) and the tokenizer.

    The folder is written beside `adapter_dir` and renamed into place, so a process killed while saving leaves
    the previous adapter (or none), never a half-written one.
    """
    # The trainer's attributes are typed loosely (any module, any processor); here they are a PeftModel and
    # the tokenizer the trainer was built with.
    with staged_dir(adapter_dir) as partial:
        cast("PeftModel", trainer.model).save_pretrained(str(partial))
        cast("PreTrainedTokenizerBase", trainer.processing_class).save_pretrained(partial)
    return adapter_dir


def save_sharded_adapter(trainer: Trainer, adapter_dir: Path) -> Path:
    """Save an adapter sharded across processes (FSDP, DeepSpeed ZeRO): every process must call this, for they
    all take part in gathering it; the first writes it, as save_adapter does, complete or not at all."""
    if trainer.is_fsdp_enabled:
        # Gathered whole on the first process (peft's FSDP guide) rather than written as one shard per process.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    gathered = adapter_dir.with_name(f".{adapter_dir.name}.gathered")
    trainer.save_model(str(gathered))  # the adapter and the tokenizer, written by the first process
    if trainer.is_world_process_zero():
        with staged_dir(adapter_dir) as partial:
            for item in gathered.iterdir():
                os.replace(item, partial / item.name)
        shutil.rmtree(gathered, ignore_errors=True)
    return adapter_dir


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """`with staged_dir(target) as partial:` write into `partial`; when the block ends without an exception,
    `partial` replaces `target` whole. On an exception the partial folder goes and `target` stays as it was."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    previous = target.with_name(f".{target.name}.previous")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a process killed mid-write: nothing in them is worth keeping.
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # A folder cannot be renamed over a non-empty one: move the old one aside first, then drop it.
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        os.replace(target, previous)
    os.replace(partial, target)
    shutil.rmtree(previous, ignore_errors=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder (checkpoint-<step> with a valid trainer_state.json), or None.

    `output_dir` is the folder holding the checkpoint-<step> folders, or a job's output_dir whose checkpoints/
    holds them. Folders a killed process left half written (no trainer_state.json yet, or one cut short) are
    skipped.
    """
    output_dir = Path(output_dir)
    if (output_dir / CHECKPOINTS_FOLDER).is_dir():
        output_dir = output_dir / CHECKPOINTS_FOLDER
    complete = [path for path in _checkpoint_folders(output_dir) if _is_complete(path)]
    return max(complete, key=checkpoint_step, default=None)


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint-<step> folder was written at."""
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{checkpoint} is not a checkpoint folder: its name is not {CHECKPOINT_PREFIX}<step>")
    return int(match.group(1))


def checked_checkpoint(checkpoint: str | Path | None) -> Path | None:
    """`checkpoint` as a Path once it is known to be a complete checkpoint folder, None for None (a fresh run);
    else a ValueError naming why. Called before anything of a run is loaded or written."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    checkpoint_step(path)
    if not path.is_dir():
        raise ValueError(f"cannot resume from {path}: there is no such folder")
    if not _is_complete(path):
        raise ValueError(f"cannot resume from {path}: the checkpoint is incomplete (no valid {TRAINER_STATE})")
    return path


def _checkpoint_folders(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [
        path
        for path in directory.iterdir()
        if path.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", path.name) is not None
    ]


def _is_complete(checkpoint: Path) -> bool:
    # trainer_state.json is written after the weights, optimizer, scheduler and RNG states; a process killed while
    # writing it leaves invalid JSON, and its global_step must be the folder's step.
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(checkpoint)


def _discard_checkpoints(directory: Path, *, keep_up_to: int | None) -> None:
    # Kept: the complete checkpoints up to the step a resumed run starts from. The later ones belong to steps
    # that are trained again, and a fresh run keeps none.
    for path in _checkpoint_folders(directory):
        if keep_up_to is None or checkpoint_step(path) > keep_up_to or not _is_complete(path):
            shutil.rmtree(path)


def _checked_text(name: str, value: object) -> str:
    # Paths may arrive as Path objects from Python callers; the config stores strings so it serialises as is.
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _checked_target_modules(value: object) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list | tuple) and value:
        names = [name for name in value if isinstance(name, str) and name.strip()]
        if len(names) == len(value):
            return names
    expected = '"all-linear", another module name or a non-empty list of names'
    raise ValueError(f"target_modules must be {expected}, got {value!r}")
