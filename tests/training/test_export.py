"""Export: an adapter merged into a bf16 base gives the logits of base + adapter; GGUF goes through llama.cpp's
converters (fetched from the llama-cpp-python source package) and reads back with transformers giving the merged
model's answers; the adapter alone becomes a GGUF LoRA."""

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.export import (
    ExportError,
    ExportUnavailable,
    converter_dir,
    export_gguf,
    export_lora_gguf,
    extract_converters,
    main,
    merge_adapter,
)
from training.models import ModelSpecError

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


def test_a_base_named_by_a_gguf_path_that_does_not_exist_is_refused_before_loading_anything(
    adapter_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelSpecError, match="no such file"):
        merge_adapter(tmp_path / "missing.gguf", adapter_dir, tmp_path / "out")

    assert not (tmp_path / "out").exists()


# llama.cpp's converters: where they come from ---------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LLAMA_CPP_DIR, an empty converter cache, and a pip that reaches no package index."""
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PREFLOOP_LLAMA_CPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return tmp_path / "cache"


def test_gguf_without_network_or_llama_cpp_dir_says_to_set_it_and_writes_nothing(
    merged_dir: Path, tmp_path: Path, offline: Path
) -> None:
    with pytest.raises(ExportUnavailable) as error:
        export_gguf(merged_dir, tmp_path / "model.gguf")

    message = str(error.value)
    assert "pip download llama-cpp-python==" in message and "LLAMA_CPP_DIR" in message
    assert "https://github.com/ggml-org/llama.cpp" in message
    assert not (tmp_path / "model.gguf").exists()
    assert list(offline.iterdir()) == []  # no half-fetched converter left to be mistaken for one


def test_the_gguf_command_exits_2_with_the_message_when_no_converter_can_be_had(
    merged_dir: Path, tmp_path: Path, offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["gguf", "--merged", str(merged_dir), "--out", str(tmp_path / "model.gguf")])

    assert exit_.value.code == 2
    assert "GGUF export needs llama.cpp's converters" in capsys.readouterr().err


def test_gguf_with_llama_cpp_dir_set_to_a_folder_without_the_script_names_that_folder(
    merged_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))

    with pytest.raises(ExportUnavailable, match=f"LLAMA_CPP_DIR is {tmp_path}, but it holds no convert_hf_to_gguf.py"):
        export_gguf(merged_dir, tmp_path / "model.gguf")


def sdist(path: Path, members: dict[str, bytes]) -> Path:
    """A llama-cpp-python-like source archive holding `members` (name → contents)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


VENDORED = "llama_cpp_python-9.9.9/vendor/llama.cpp"


def test_only_the_converters_conversion_and_gguf_py_are_extracted_from_the_source_archive(tmp_path: Path) -> None:
    archive = sdist(
        tmp_path / "llama_cpp_python-9.9.9.tar.gz",
        {
            f"{VENDORED}/convert_hf_to_gguf.py": b"# converter",
            f"{VENDORED}/convert_lora_to_gguf.py": b"# lora",
            f"{VENDORED}/conversion/__init__.py": b"",
            f"{VENDORED}/gguf-py/gguf/__init__.py": b"",
            f"{VENDORED}/ggml/src/ggml.c": b"int main;",
            "llama_cpp_python-9.9.9/llama_cpp/llama.py": b"",
        },
    )

    folder = extract_converters(archive, tmp_path / "llama-cpp")

    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert files == [
        "conversion/__init__.py",
        "convert_hf_to_gguf.py",
        "convert_lora_to_gguf.py",
        "gguf-py/gguf/__init__.py",
    ]
    assert (folder / "convert_hf_to_gguf.py").read_bytes() == b"# converter"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["llama-cpp", "llama_cpp_python-9.9.9.tar.gz"]


@pytest.mark.parametrize("unsafe", ["/etc/cron.d/evil", f"{VENDORED}/gguf-py/../../../../evil.py"])
def test_a_source_archive_with_a_path_outside_its_folder_is_refused_and_nothing_is_extracted(
    tmp_path: Path, unsafe: str
) -> None:
    archive = sdist(
        tmp_path / "bad.tar.gz",
        {f"{VENDORED}/convert_hf_to_gguf.py": b"#", f"{VENDORED}/gguf-py/gguf/__init__.py": b"", unsafe: b"x"},
    )

    with pytest.raises(ExportError, match="unsafe path"):
        extract_converters(archive, tmp_path / "llama-cpp")

    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.tar.gz"]


def converter_script(tmp_path: Path, body: str) -> Path:
    """A stand-in llama.cpp folder: convert_hf_to_gguf.py taking the same arguments (MODEL --outfile F --outtype
    T), and a gguf-py whose gguf module says which one it is."""
    script = tmp_path / "llama.cpp" / "convert_hf_to_gguf.py"
    (script.parent / "gguf-py" / "gguf").mkdir(parents=True)
    (script.parent / "gguf-py" / "gguf" / "__init__.py").write_text("WHICH = 'vendored'\n")
    script.write_text(
        "import argparse, sys\n"
        "import gguf\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('model')\n"
        "parser.add_argument('--outfile', required=True)\n"
        "parser.add_argument('--outtype', choices=['f32', 'f16', 'bf16', 'q8_0', 'tq1_0', 'tq2_0', 'auto'])\n"
        "args = parser.parse_args()\n" + body
    )
    return script


def test_gguf_runs_the_converter_of_llama_cpp_dir_with_its_own_gguf_py_and_puts_its_file_in_place(
    merged_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gguf package is installed here too; the converter must get the gguf-py that came with it.
    script = converter_script(
        tmp_path,
        "assert (__import__('pathlib').Path(args.model) / 'config.json').is_file()\n"
        "open(args.outfile, 'wb').write(b'GGUF' + args.outtype.encode() + gguf.WHICH.encode())\n",
    )
    monkeypatch.setenv("LLAMA_CPP_DIR", str(script.parent))

    written = export_gguf(merged_dir, tmp_path / "out" / "model.gguf", outtype="q8_0")

    assert written == tmp_path / "out" / "model.gguf"
    assert written.read_bytes() == b"GGUFq8_0vendored"
    assert os.listdir(written.parent) == ["model.gguf"]


def test_the_converter_command_prints_llama_cpp_dir_which_wins_over_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = converter_script(tmp_path, "")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(script.parent))
    monkeypatch.setenv("PREFLOOP_LLAMA_CPP_CACHE", str(tmp_path / "cache"))

    assert main(["converter"]) == 0

    assert capsys.readouterr().out.strip() == str(script.parent)
    assert not (tmp_path / "cache").exists()


def test_a_failing_converter_raises_with_its_output_and_leaves_no_file(merged_dir: Path, tmp_path: Path) -> None:
    script = converter_script(
        tmp_path,
        "open(args.outfile, 'wb').write(b'GGUF partial')\n"
        "sys.exit('NotImplementedError: Architecture LlamaForCausalLM is not supported')\n",
    )

    with pytest.raises(ExportError, match="failed with exit status 1: NotImplementedError: Architecture"):
        export_gguf(merged_dir, tmp_path / "model.gguf", converter=script.parent)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["llama.cpp"]


def test_a_converter_missing_a_python_package_names_the_package_to_install(merged_dir: Path, tmp_path: Path) -> None:
    script = converter_script(tmp_path, "import sentencepiece_not_installed_here\n")

    with pytest.raises(ExportUnavailable, match="needs the Python package sentencepiece_not_installed_here: pip"):
        export_gguf(merged_dir, tmp_path / "model.gguf", converter=script)


# The real converters on the tiny model, read back by transformers --------------------------------------------

TEST_CACHE = Path(os.environ.get("PREFLOOP_TEST_CACHE", Path(__file__).resolve().parents[2] / "var" / "test-cache"))
PROMPTS = [
    "What is a checkpoint?",
    "How do I rate two answers?",
    "Explain the learning rate.",
    "What does a tokenizer do?",
    "Why is the sky blue?",
    "Name a colour and a season.",
    "Tell me about graphics cards.",
    "What is a preference pair?",
]


@pytest.fixture(scope="module")
def llama_cpp() -> Path:
    """llama.cpp's converters: LLAMA_CPP_DIR's, else the pinned llama-cpp-python's, fetched once per machine."""
    return converter_dir(cache_dir=TEST_CACHE / "llama-cpp")


@pytest.fixture(scope="module")
def gguf_files(merged_dir: Path, llama_cpp: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {
        outtype: export_gguf(merged_dir, folder / f"model-{outtype}.gguf", converter=llama_cpp, outtype=outtype)
        for outtype in ("f16", "q8_0", "q4_0")
    }


def greedy_answers(model: torch.nn.Module, tokenizer_dir: Path, max_new_tokens: int = 12) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    answers = []
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # type: ignore[operator]
        answers.append(output[0, inputs["input_ids"].shape[1] :].tolist())
    return answers


@pytest.fixture(scope="module")
def merged_answers(merged_dir: Path) -> list[list[int]]:
    return greedy_answers(AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32), merged_dir)


def load_gguf(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


def test_the_f16_gguf_read_back_by_transformers_answers_exactly_as_the_merged_model(
    gguf_files: dict[str, Path], merged_dir: Path, merged_answers: list[list[int]]
) -> None:
    answers = greedy_answers(load_gguf(gguf_files["f16"]), merged_dir)

    assert answers == merged_answers


def test_the_q8_0_gguf_agrees_with_the_merged_model_on_the_first_token_of_nine_answers_in_ten(
    gguf_files: dict[str, Path], merged_dir: Path, merged_answers: list[list[int]]
) -> None:
    answers = greedy_answers(load_gguf(gguf_files["q8_0"]), merged_dir, max_new_tokens=1)

    agreeing = sum(ours[0] == theirs[0] for ours, theirs in zip(answers, merged_answers, strict=True))
    assert agreeing >= 0.9 * len(PROMPTS)


def test_the_gguf_carries_the_tiny_models_tokenizer_and_chat_template(
    gguf_files: dict[str, Path], merged_dir: Path
) -> None:
    # llama.cpp cannot recognise the tiny model's own BPE vocabulary by its hash; the export names its GPT-2
    # byte-level pre-tokenizer, and the tokenizer read back from the GGUF must split text as the original does.
    reader = GGUFReader(gguf_files["f16"])
    original = AutoTokenizer.from_pretrained(merged_dir)
    read_back = AutoTokenizer.from_pretrained(gguf_files["f16"].parent, gguf_file=gguf_files["f16"].name)

    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()
    assert [read_back(prompt)["input_ids"] for prompt in PROMPTS] == [
        original(prompt)["input_ids"] for prompt in PROMPTS
    ]


def test_the_q4_0_gguf_holds_4_bit_matrices_within_one_quantisation_step_of_the_merged_weights(
    gguf_files: dict[str, Path], merged_dir: Path
) -> None:
    types = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(gguf_files["q4_0"]).tensors}
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).state_dict()
    read_back = load_gguf(gguf_files["q4_0"]).state_dict()

    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["token_embd.weight"] == "Q4_0"
    assert types["output.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    for name, weight in merged.items():
        if weight.dim() != 2:
            continue
        # A Q4_0 block of 32 stores round(x / d) in -8..7 with d = -(the block's largest magnitude) / 8, so a value
        # lands at most one step d away (a clipped +8); Q8_0 rounds to d = largest / 127, half a step. d is stored
        # as float16 (a relative error of 2^-11), which moves a value by up to its integer (8 or 127) times that.
        blocks = weight.reshape(-1, 32)
        largest_integer, steps = (127, 0.5) if name == "lm_head.weight" else (8, 1.0)
        step = blocks.abs().amax(dim=1, keepdim=True) / largest_integer
        error = (read_back[name].reshape(-1, 32) - blocks).abs()
        assert bool((error <= step * (steps + largest_integer * 2**-11) + 1e-7).all()), name


def test_a_lora_adapter_becomes_a_gguf_lora_that_names_its_tensors_and_alpha(
    adapter_dir: Path, tiny_model_dir: Path, llama_cpp: Path, tmp_path: Path
) -> None:
    written = export_lora_gguf(adapter_dir, tiny_model_dir, tmp_path / "adapter.gguf", converter=llama_cpp)

    reader = GGUFReader(written)
    names = {tensor.name for tensor in reader.tensors}
    lora_a = next(tensor for tensor in reader.tensors if tensor.name == "blk.0.attn_q.weight.lora_a")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    # r=4 on the seven linear layers of each of the two blocks: an A and a B for each.
    assert len(names) == 2 * 7 * 2 and "blk.1.ffn_down.weight.lora_b" in names
    assert tuple(int(size) for size in reversed(lora_a.shape)) == (4, 64)
    adapter_a = safe_open(adapter_dir / "adapter_model.safetensors", framework="np").get_tensor(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    )
    assert np.allclose(lora_a.data.astype(np.float32), adapter_a, atol=1e-3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter.gguf"]


def test_the_lora_gguf_command_prints_the_file_it_wrote(
    adapter_dir: Path, tiny_model_dir: Path, llama_cpp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adapter.gguf"
    arguments = ["--adapter", str(adapter_dir), "--base", str(tiny_model_dir), "--out", str(out)]

    status = main(["lora-gguf", *arguments, "--outtype", "q8_0", "--converter", str(llama_cpp)])

    assert status == 0
    assert capsys.readouterr().out.strip() == str(out)
    types = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(out).tensors}
    # B's rows are r = 4 values long, too short for Q8_0's blocks of 32; the converter keeps those in f16.
    assert types["blk.0.attn_q.weight.lora_a"] == "Q8_0" and types["blk.0.attn_q.weight.lora_b"] == "F16"
