"""Where the model runs and in which precision it computes."""

from __future__ import annotations

import torch


def pick_device() -> str:
    """Return "cuda" when a CUDA GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(device: str) -> torch.dtype:
    """The dtype for matrix multiplications on `device`: bfloat16 on CUDA, float32 on CPU.

    CPUs have no fast bfloat16 kernels for most ops, and float32 keeps the tiny test model's numbers exact
    enough for greedy outputs to be compared across runs.
    """
    return torch.bfloat16 if device.startswith("cuda") else torch.float32
