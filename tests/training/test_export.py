"""Export: an adapter merged into a bf16 base gives the logits of base + adapter; GGUF goes through llama.cpp's
converter, and without one the error says what to install."""

import json
import os
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.export import ExportError, ExportUnavailable, export_gguf, main, merge_adapter

# Real TRL/PEFT training or merging on the tiny model: left out of `make test-fast`.
pytestmark = pytest.mark.training

TEXT = "What is a checkpoint? It is the saved state of a training run."


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on every linear layer of the tiny model with random, non-zero A and B: it changes the logits
    the way a trained one does, without the training."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def merged_dir(tiny_model_dir: Path, adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return merge_adapter(tiny_model_dir, adapter_dir, tmp_path_factory.mktemp("export") / "merged")


def logits(model: torch.nn.Module, tokenizer_dir: Path) -> torch.Tensor:
    inputs = AutoTokenizer.from_pretrained(tokenizer_dir)(TEXT, return_tensors="pt")
    with torch.inference_mode():
        return model(**inputs).logits.float()


def test_the_merged_model_gives_the_logits_of_the_base_with_its_adapter_within_bf16_rounding(
    tiny_model_dir: Path, adapter_dir: Path, merged_dir: Path
) -> None:
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), adapter_dir
    )
    expected = logits(unmerged, tiny_model_dir)
    with unmerged.disable_adapter():
        base_only = logits(unmerged, tiny_model_dir)
    merged = logits(AutoModelForCausalLM.from_pretrained(merged_dir), merged_dir)

    # bfloat16 keeps 8 significant bits (a relative step of 2^-8, about 0.4%); rounding the merged weights and two
    # layers of bf16 arithmetic put the logits a few such steps of the largest logit away from float32's.
    tolerance = 0.03 * expected.abs().max().item()
    assert (merged - expected).abs().max().item() <= tolerance
    # The adapter moves the logits far more than that, so the merge is what the comparison checks.
    assert (expected - base_only).abs().max().item() > 10 * tolerance


def test_the_merged_folder_holds_bf16_safetensors_without_adapter_or_quantisation_and_the_tokenizer(
    merged_dir: Path,
) -> None:
    with safe_open(merged_dir / "model.safetensors", framework="pt") as weights:
        names = list(weights.keys())
        dtypes = {weights.get_tensor(name).dtype for name in names}
    config = json.loads((merged_dir / "config.json").read_text())

    assert names and not [name for name in names if "lora_" in name or "base_layer" in name]
    assert dtypes == {torch.bfloat16}
    assert "quantization_config" not in config
    assert (merged_dir / "tokenizer.json").is_file()
    assert sorted(path.name for path in merged_dir.parent.iterdir()) == ["merged"]  # no partial folder left


def test_merging_again_replaces_the_earlier_export_whole(
    tiny_model_dir: Path, adapter_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"from an earlier export")

    merge_adapter(tiny_model_dir, adapter_dir, out, dtype="float32")

    assert not (out / "stale.bin").exists()
    assert (out / "model.safetensors").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged"]


def test_a_folder_without_an_adapter_is_refused_and_nothing_is_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"holds no PEFT adapter \(no adapter_config.json\)"):
        merge_adapter(tiny_model_dir, tmp_path / "no-adapter", tmp_path / "out")
    with pytest.raises(ValueError, match="dtype must be one of bfloat16, float16, float32, got 'int4'"):
        merge_adapter(tiny_model_dir, tmp_path, tmp_path / "out", dtype="int4")

    assert not (tmp_path / "out").exists()


def test_the_merge_command_prints_the_folder_it_wrote(
    tiny_model_dir: Path, adapter_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "merged"

    status = main(["merge", "--base", str(tiny_model_dir), "--adapter", str(adapter_dir), "--out", str(out)])

    assert status == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "model.safetensors").is_file()


@pytest.fixture
def no_converter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LLAMA_CPP_DIR and a PATH without llama.cpp's script (the machine's real state, made certain)."""
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_gguf_without_a_converter_says_what_to_install_and_writes_nothing(
    merged_dir: Path, tmp_path: Path, no_converter: None
) -> None:
    with pytest.raises(ExportUnavailable) as error:
        export_gguf(merged_dir, tmp_path / "model.gguf")

    message = str(error.value)
    assert "convert_hf_to_gguf.py" in message and "LLAMA_CPP_DIR" in message
    assert "https://github.com/ggml-org/llama.cpp" in message
    assert not (tmp_path / "model.gguf").exists()


def test_gguf_with_llama_cpp_dir_set_to_a_folder_without_the_script_names_that_folder(
    merged_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))

    with pytest.raises(ExportUnavailable, match=f"LLAMA_CPP_DIR is {tmp_path}, but it holds no convert_hf_to_gguf.py"):
        export_gguf(merged_dir, tmp_path / "model.gguf")


def test_the_gguf_command_exits_2_with_the_message_when_no_converter_is_installed(
    merged_dir: Path, tmp_path: Path, no_converter: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["gguf", "--merged", str(merged_dir), "--out", str(tmp_path / "model.gguf")])

    assert exit_.value.code == 2
    assert "GGUF export needs llama.cpp's convert_hf_to_gguf.py" in capsys.readouterr().err


def converter_script(tmp_path: Path, body: str) -> Path:
    """A stand-in for llama.cpp's convert_hf_to_gguf.py taking the same arguments (MODEL --outfile F --outtype T)."""
    script = tmp_path / "llama.cpp" / "convert_hf_to_gguf.py"
    script.parent.mkdir()
    script.write_text(
        "import argparse, sys\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('model')\n"
        "parser.add_argument('--outfile', required=True)\n"
        "parser.add_argument('--outtype', choices=['f32', 'f16', 'bf16', 'q8_0', 'tq1_0', 'tq2_0', 'auto'])\n"
        "args = parser.parse_args()\n" + body
    )
    return script


def test_gguf_runs_the_converter_of_llama_cpp_dir_and_puts_its_file_in_place(
    merged_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = converter_script(
        tmp_path,
        "assert (__import__('pathlib').Path(args.model) / 'config.json').is_file()\n"
        "open(args.outfile, 'wb').write(b'GGUF' + args.outtype.encode())\n",
    )
    monkeypatch.setenv("LLAMA_CPP_DIR", str(script.parent))

    written = export_gguf(merged_dir, tmp_path / "out" / "model.gguf", outtype="q8_0")

    assert written == tmp_path / "out" / "model.gguf"
    assert written.read_bytes() == b"GGUFq8_0"
    assert os.listdir(written.parent) == ["model.gguf"]


def test_a_failing_converter_raises_with_its_output_and_leaves_no_file(merged_dir: Path, tmp_path: Path) -> None:
    script = converter_script(
        tmp_path,
        "open(args.outfile, 'wb').write(b'GGUF partial')\n"
        "sys.exit('NotImplementedError: Architecture LlamaForCausalLM is not supported')\n",
    )

    with pytest.raises(ExportError, match="failed with exit status 1: NotImplementedError: Architecture"):
        export_gguf(merged_dir, tmp_path / "model.gguf", converter=script)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["llama.cpp"]
