"""Which modules of a base model LoRA can wrap, found cheaply: the model is built from its config on PyTorch's meta
device, so no weight is read or allocated. A job's `target_modules` are checked with it when the job is queued,
instead of failing in the worker once the model is loaded (PEFT's NoMatchingPeftModuleError, or "Target module …
is not supported").

Run:

    python -m training.lora_targets MODEL      # the short names a target_modules list may use, as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.models import SHIPPED, ModelSpecError, check_model, shipped_gguf

ALL_LINEAR = "all-linear"
# The module classes PEFT's LoRA layer wraps (peft.tuners.lora.model.LoraModel._create_new_module).
WRAPPABLE = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention")


def module_types(spec: str) -> dict[str, str]:
    """Every named module of the causal LM `spec` names (as check_model reads it) → its class name.

    Raises ModelSpecError when `spec` cannot be read (check_model's reasons) or its config cannot be built.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model(spec)
    try:
        config = AutoConfig.from_pretrained(**_config_source(spec))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as error:
        raise ModelSpecError(f"{spec}: its model cannot be built from its config ({error})") from None
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def _config_source(spec: str) -> dict[str, Any]:
    gguf = shipped_gguf(spec) if spec in SHIPPED else Path(spec).expanduser()
    if gguf.is_file() and gguf.suffix.lower() == ".gguf":
        return {"pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name}
    return {"pretrained_model_name_or_path": spec}


def check_target_modules(spec: str, targets: str | Sequence[str]) -> None:
    """Raise ValueError unless every name of `targets` matches a module of `spec` that LoRA can wrap, as PEFT
    matches a list: the module's full name, or its last dotted parts ("q_proj", "self_attn.q_proj").
    "all-linear" always passes. The message names each bad target and the names that would do."""
    if targets == ALL_LINEAR:
        return
    names = [targets] if isinstance(targets, str) else list(targets)
    types = module_types(spec)
    problems = []
    for target in names:
        matched = {name: kind for name, kind in types.items() if name == target or name.endswith(f".{target}")}
        if not matched:
            problems.append(f"“{target}” matches no module")
        elif not any(kind in WRAPPABLE for kind in matched.values()):
            kinds = ", ".join(sorted(set(matched.values())))
            problems.append(f"“{target}” is a {kinds}, which LoRA cannot wrap")
    if problems:
        choices = ", ".join(wrappable_names(types))
        raise ValueError(f"{'; '.join(problems)} in {spec}. Use {ALL_LINEAR}, or some of: {choices}")


def wrappable_names(types: dict[str, str]) -> list[str]:
    """The short (last-part) names of the modules LoRA can wrap, sorted."""
    return sorted({name.rpartition(".")[2] for name, kind in types.items() if kind in WRAPPABLE})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.lora_targets", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a local folder, a Hugging Face Hub id, a .gguf file or a shipped name")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(wrappable_names(module_types(args.model))))
    except ModelSpecError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
