"""The vLLM backend on a machine without vLLM: it must import, and choosing it must say how to install vLLM.

vLLM needs a CUDA GPU and is not installed on the machines that run this suite, so no test here runs it."""

from pathlib import Path

import pytest

from training.generation import open_generator
from training.generation.vllm import VLLMBackend, VLLMUnavailableError, available

VLLM_INSTALLED = "vLLM is installed here; these tests are about machines without it"


@pytest.mark.skipif(available(), reason=VLLM_INSTALLED)
def test_choosing_the_vllm_backend_without_vllm_says_how_to_install_it(tiny_model_dir: Path) -> None:
    with pytest.raises(VLLMUnavailableError, match="pip install vllm"):
        VLLMBackend(str(tiny_model_dir), {"base": None})


@pytest.mark.skipif(available(), reason=VLLM_INSTALLED)
def test_opening_a_vllm_generator_without_vllm_says_how_to_install_it_or_what_to_use_instead(
    tiny_model_dir: Path,
) -> None:
    with pytest.raises(VLLMUnavailableError, match=r"run `pip install vllm` .*, or use the transformers backend"):
        open_generator(str(tiny_model_dir), {"base": None}, backend="vllm")


def test_the_vllm_backend_refuses_8bit_and_unknown_quantizations_before_looking_for_vllm(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="quantization 8bit is not available with the vllm backend"):
        VLLMBackend(str(tiny_model_dir), {"base": None}, quantization="8bit")
    with pytest.raises(ValueError, match="quantization must be one of none, 4bit, 8bit, got '3bit'"):
        VLLMBackend(str(tiny_model_dir), {"base": None}, quantization="3bit")  # type: ignore[arg-type]
