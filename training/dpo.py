"""DPO with QLoRA: a preference JSONL and a base model in, a LoRA adapter and a metrics stream out.

The base model is loaded in 4-bit NF4 with double quantisation and frozen; only LoRA adapters on its linear
layers train, with TRL's DPOTrainer and a paged 8-bit AdamW. The reference model is the base with the adapter
switched off, so no second copy is held in memory. Runs on CPU (slowly, fine for the tiny model) or on one
CUDA GPU.

Run:

    python -m training.dpo --config job.yaml

where job.yaml holds a DPOJobConfig, for instance:

    base_model: var/models/tiny
    dataset_path: var/preferences.jsonl     # TRL conversational preference records (training/preferences.py)
    output_dir: var/dpo-run                 # gets adapter/ and metrics.jsonl
    beta: 0.1
    max_steps: 20
    qlora: {lora_r: 16, lora_alpha: 32}

It prints the adapter directory on stdout and each training log line as JSON on stderr; a bad config or
dataset exits with status 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from training.preferences import PreferenceFileError, read_preference_jsonl
from training.validation import check_bool, check_choice, check_int, check_known_keys, check_number, is_int

# torch, transformers, peft and trl are imported inside the functions that use them: the web app imports this
# module to validate job configs and should not load them for that.
if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
    from trl import DPOConfig, DPOTrainer

QUANT_TYPES = ("nf4", "fp4")
# Optimizers known to work with a 4-bit base here; the paged ones ride out memory spikes on a GPU.
OPTIMIZERS = ("paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit", "adamw_torch", "sgd")

LogCallback = Callable[[dict[str, Any]], None]
StopCallback = Callable[[], bool]


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
class DPOJobConfig:
    """Everything one DPO run needs. Paths are read relative to the working directory.

    save_steps > 0 writes a Trainer checkpoint every that many steps under output_dir/checkpoints; the default
    0 writes none: the adapter saved at the end is the product, and checkpoints of a small run only cost disk.
    """

    base_model: str
    dataset_path: str
    output_dir: str
    beta: float = 0.1
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
    qlora: QLoRASettings = field(default_factory=QLoRASettings)

    def __post_init__(self) -> None:
        self.base_model = _checked_text("base_model", self.base_model)
        self.dataset_path = _checked_text("dataset_path", self.dataset_path)
        self.output_dir = _checked_text("output_dir", self.output_dir)
        check_number("beta", self.beta, above=0.0)
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
        if not isinstance(self.qlora, QLoRASettings):
            raise ValueError(f"qlora must be QLoRASettings, got {type(self.qlora).__name__}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DPOJobConfig:
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
    def from_yaml(cls, path: Path) -> DPOJobConfig:
        """A config from a YAML file holding one mapping."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ValueError(f"not valid YAML: {error}") from None
        return cls.from_dict(data if data is not None else {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DPOResult:
    """What a run produced. `metrics` are the log dicts in order (each with "step"); `stopped_early` is True
    when should_stop ended the run before its planned last step; the adapter saved then is the partial one."""

    adapter_dir: Path
    steps: int
    metrics: list[dict[str, Any]]
    train_loss: float | None
    stopped_early: bool


def train_dpo(
    config: DPOJobConfig,
    *,
    on_log: LogCallback | None = None,
    should_stop: StopCallback | None = None,
) -> DPOResult:
    """Train a LoRA adapter with DPO on `config.dataset_path` and save it to `output_dir/adapter`.

    Every training log dict (loss, rewards, learning rate, ..., plus "step") goes to `on_log` and, one JSON
    object a line, to `output_dir/metrics.jsonl`. `should_stop` is asked after every optimizer step; when it
    returns True the run ends after that step and the adapter trained so far is saved.
    """
    from training.metrics_relay import MetricsRelay

    records = read_preference_jsonl(Path(config.dataset_path))
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    relay = MetricsRelay(output_dir / "metrics.jsonl", on_log=on_log, should_stop=should_stop)
    trainer = build_dpo_trainer(config, records, callbacks=[relay])
    output = trainer.train()
    adapter_dir = save_adapter(trainer, output_dir / "adapter")
    steps = trainer.state.global_step
    return DPOResult(
        adapter_dir=adapter_dir,
        steps=steps,
        metrics=list(relay.logs),
        train_loss=output.training_loss if steps > 0 and math.isfinite(output.training_loss) else None,
        stopped_early=relay.stopped_early,
    )


def build_dpo_trainer(
    config: DPOJobConfig, records: Sequence[Mapping[str, Any]], *, callbacks: Sequence[TrainerCallback] = ()
) -> DPOTrainer:
    """A ready-to-train DPOTrainer: the base model quantised and prepared, LoRA attached, seeds set."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, set_seed
    from trl import DPOTrainer

    from training.device import pick_device

    # The trainer seeds itself, but only after creating the LoRA weights; seeding first makes them repeatable.
    set_seed(config.seed)
    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    trainer = DPOTrainer(
        model=load_base_for_training(config, device),
        args=dpo_arguments(config, device),
        train_dataset=Dataset.from_list([dict(record) for record in records]),
        processing_class=tokenizer,
        peft_config=lora_config(config.qlora),
        callbacks=list(callbacks),
    )
    # With progress bars off the Trainer prints every log dict to stdout; the callbacks report them instead.
    trainer.remove_callback(PrinterCallback)
    return trainer


def load_base_for_training(config: DPOJobConfig, device: str) -> PreTrainedModel:
    """The base model on `device`, quantised to 4 bits and prepared for k-bit training if the config asks."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from training.device import compute_dtype

    dtype = compute_dtype(device)
    qlora = config.qlora
    quantization = None
    if qlora.load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=qlora.quant_type,
            bnb_4bit_use_double_quant=qlora.double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(
        config.base_model, dtype=dtype, device_map=device, quantization_config=quantization
    )
    if qlora.load_in_4bit:
        # Freezes the quantised weights, keeps norms in float32 and enables gradient checkpointing with input
        # gradients, without which no gradient would reach the adapters through a frozen, checkpointed base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


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


def dpo_arguments(config: DPOJobConfig, device: str) -> DPOConfig:
    """TRL's DPOConfig for the job: no reporting services, checkpoints only when asked, bf16 only on CUDA."""
    from trl import DPOConfig

    # The Trainer creates its output_dir up front; aim it at a checkpoints folder only when there will be any.
    checkpoints = Path(config.output_dir) / "checkpoints" if config.save_steps else Path(config.output_dir)
    return DPOConfig(
        output_dir=str(checkpoints),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        optim=config.optim,
        use_cpu=device == "cpu",
        # TRL turns bf16 on by default; on a CPU it would emulate bfloat16 slowly and less exactly.
        bf16=device.startswith("cuda"),
        report_to="none",
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        # The metrics stream is the progress report; progress bars would only fill the worker's log.
        disable_tqdm=True,
    )


def save_adapter(trainer: DPOTrainer, adapter_dir: Path) -> Path:
    """Save the trained adapter (adapter_config.json, adapter_model.safetensors) and the tokenizer."""
    adapter_dir.mkdir(parents=True, exist_ok=True)
    # The trainer's attributes are typed loosely (any module, any processor); here they are a PeftModel and
    # the tokenizer build_dpo_trainer gave it.
    cast("PeftModel", trainer.model).save_pretrained(str(adapter_dir))
    cast("PreTrainedTokenizerBase", trainer.processing_class).save_pretrained(adapter_dir)
    return adapter_dir


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


def _print_log(entry: dict[str, Any]) -> None:
    print(json.dumps(entry), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dpo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="YAML file holding a DPOJobConfig")
    args = parser.parse_args(argv)
    try:
        config = DPOJobConfig.from_yaml(args.config)
    except (ValueError, OSError) as error:
        parser.error(f"bad config {args.config}: {error}")
    try:
        read_preference_jsonl(Path(config.dataset_path))
    except (PreferenceFileError, OSError) as error:
        parser.error(f"bad dataset: {error}")
    result = train_dpo(config, on_log=_print_log)
    print(result.adapter_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
