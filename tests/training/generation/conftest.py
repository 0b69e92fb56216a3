"""Fixtures for the generation tests: LoRA adapters with random weights on the tiny model."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def build_lora_adapter(base_dir: Path, out_dir: Path, *, seed: int) -> Path:
    """A LoRA adapter with random non-zero B weights (PEFT starts B at zero, which would change nothing)."""
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two different adapters, "a" and "b", by their paths."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: str(build_lora_adapter(tiny_model_dir, root / name, seed=seed)) for name, seed in [("a", 1), ("b", 2)]
    }
