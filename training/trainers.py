"""The trainers of Prefloop's runs: TRL's DPOTrainer and SFTTrainer, resuming a QLoRA adapter in its own dtype.

This module imports trl and transformers at once: training.dpo and training.sft import it only when they build a
trainer, so that their configs stay cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import Trainer
from trl import DPOTrainer, SFTTrainer

if TYPE_CHECKING:
    from torch import nn
    from torch.nn.modules.module import _IncompatibleKeys


class AdapterResumingTrainer(Trainer):
    """A Trainer whose resume loads the checkpoint's adapter weights into the adapter it built, in that adapter's
    dtype, so that a resumed run trains on exactly as an uninterrupted one would.

    The Trainer resumes a PEFT model with peft's load_adapter, which upcasts the adapter to float32; TRL keeps a
    QLoRA adapter in bfloat16 (as the QLoRA paper does), so without this the steps after a resume would train a
    float32 adapter and end elsewhere.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        from peft import PeftModel, set_peft_model_state_dict
        from peft.utils import load_peft_weights

        target = model if model is not None else self.model
        if not isinstance(target, PeftModel):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        adapter = target.active_adapter
        device = next(target.parameters()).device
        weights = load_peft_weights(resume_from_checkpoint, device=str(device))
        # Copied into the existing parameters (their dtype kept), which the optimizer is about to be built on.
        # peft annotates the result as `namedtuple`, the factory rather than a type: it is torch's load_state_dict
        # result.
        result: _IncompatibleKeys = set_peft_model_state_dict(target, weights, adapter_name=adapter)
        missing = [key for key in result.missing_keys if "lora_" in key and f".{adapter}." in key]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"the checkpoint {resume_from_checkpoint} does not fit this run's adapter: "
                f"missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}"
            )


class QLoRADPOTrainer(AdapterResumingTrainer, DPOTrainer):
    """TRL's DPOTrainer, resuming as AdapterResumingTrainer does."""


class QLoRASFTTrainer(AdapterResumingTrainer, SFTTrainer):
    """TRL's SFTTrainer, resuming as AdapterResumingTrainer does."""
