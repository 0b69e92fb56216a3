"""Prefloop's training library: tiny model, generation, preference data, QLoRA DPO. Never imports Django."""
