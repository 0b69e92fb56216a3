"""The command line: `python -m training.generation` answers a JSONL file of prompts with every variant given."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.generation.cli import parse_adapter_options, read_prompts_jsonl
from training.generation.vllm import available as vllm_available

REPO = Path(__file__).resolve().parents[3]


def test_the_command_writes_one_answer_per_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = ['{"id": "heritage-1", "prompt": "What is oral history?"}', '{"id": 2, "prompt": "What is RAG?"}']
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"

    completed = subprocess.run(
        [sys.executable, "-m", "training.generation", "--model", str(tiny_model_dir), "--prompts", str(prompts),
         "--out", str(out), "--quantization", "4bit", "--temperature", "0", "--max-new-tokens", "16"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["variant"], row["key"]) for row in rows] == [("base", "heritage-1"), ("base", "2")]
    assert all(row["text"] and 0 < row["completion_tokens"] <= 16 for row in rows)


def test_the_command_answers_as_every_adapter_given(
    tiny_model_dir: Path, adapters: dict[str, str], tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p1", "prompt": "What is oral history?"}\n')
    out = tmp_path / "answers.jsonl"

    completed = subprocess.run(
        [sys.executable, "-m", "training.generation", "--model", str(tiny_model_dir), "--prompts", str(prompts),
         "--out", str(out), "--adapter", f"tuned={adapters['a']}", "--adapter", "plain=", "--temperature", "1.0",
         "--max-new-tokens", "12", "--samples-per-prompt", "2", "--seed", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["variant"], row["key"], row["sample_index"], row["seed"]) for row in rows] == [
        ("tuned", "p1", 0, 5), ("tuned", "p1", 1, 6), ("plain", "p1", 0, 5), ("plain", "p1", 1, 6),
    ]  # fmt: skip


def test_the_command_refuses_an_adapter_option_without_a_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p1", "prompt": "What is oral history?"}\n')

    completed = subprocess.run(
        [sys.executable, "-m", "training.generation", "--model", str(tiny_model_dir), "--prompts", str(prompts),
         "--out", str(tmp_path / "answers.jsonl"), "--adapter", "=/some/adapter"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert completed.returncode == 2
    assert "--adapter must be NAME=PATH (NAME= for the plain base), got '=/some/adapter'" in completed.stderr
    assert not (tmp_path / "answers.jsonl").exists()


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here; the test is about machines without it")
def test_the_command_with_the_vllm_backend_and_no_vllm_fails_with_the_install_command(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p1", "prompt": "What is oral history?"}\n')

    completed = subprocess.run(
        [sys.executable, "-m", "training.generation", "--backend", "vllm", "--model", str(tiny_model_dir),
         "--prompts", str(prompts), "--out", str(tmp_path / "answers.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert completed.returncode == 2
    assert "the vllm backend needs vLLM, which is not installed here: run `pip install vllm`" in completed.stderr
    assert not vllm_available()


def test_it_reads_a_prompt_that_holds_line_and_paragraph_separators(tmp_path: Path) -> None:
    prompt = "First line\u2028second line\u2029next paragraph\x85after a next-line mark"
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"id": 1, "prompt": prompt}, ensure_ascii=False) + "\n", encoding="utf-8")

    [request] = read_prompts_jsonl(path)

    assert request.key == "1"
    assert request.messages == [{"role": "user", "content": prompt}]


def test_it_reads_a_prompt_file_with_windows_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "One?"}\r\n\r\n{"id": "b", "prompt": "Two?"}\r\n')

    requests = read_prompts_jsonl(path)

    assert [(request.key, request.messages[0]["content"]) for request in requests] == [("a", "One?"), ("b", "Two?")]


def test_it_names_the_line_of_a_bad_prompt(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": 1, "prompt": "Fine"}\n{"id": 2}\n', encoding="utf-8")

    with pytest.raises(ValueError, match=r'prompts\.jsonl:2: expected an object with "id" and a string "prompt"'):
        read_prompts_jsonl(path)


def test_adapter_options_name_the_variants_and_default_to_the_plain_base() -> None:
    assert parse_adapter_options(["tuned=/runs/1/adapter", "plain="]) == {"tuned": "/runs/1/adapter", "plain": None}
    assert parse_adapter_options([]) == {"base": None}
    with pytest.raises(ValueError, match="--adapter names the variant 'tuned' twice"):
        parse_adapter_options(["tuned=/a", "tuned=/b"])
