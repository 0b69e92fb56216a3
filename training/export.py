"""Model export: a LoRA adapter merged into its base (bf16 safetensors), and that as GGUF through llama.cpp.

The merge loads the base in bfloat16 (never the 4-bit weights the adapter was trained against: merging into
quantised weights would round the adapter away), applies the PEFT adapter, folds it into the weights with
merge_and_unload() and saves the model as safetensors with the adapter's tokenizer. GGUF conversion runs
llama.cpp's convert_hf_to_gguf.py on a merged folder; the script is found through the `converter` argument,
$LLAMA_CPP_DIR (a llama.cpp clone) or PATH. Every output appears complete or not at all: it is written beside its
target and renamed into place.

Run:

    python -m training.export merge --base var/models/tiny --adapter var/dpo-run/adapter --out var/merged \\
        [--dtype bfloat16]
    python -m training.export gguf --merged var/merged --out var/model.gguf [--outtype bf16] [--converter PATH]

Each prints the folder or file it wrote. Bad arguments (a missing adapter, an unknown dtype, no llama.cpp
converter) exit with status 2 and say what is wrong; a converter that fails exits with status 1 and its output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from training.trainer_common import staged_dir

DTYPES = ("bfloat16", "float16", "float32")
# convert_hf_to_gguf.py's --outtype values that need no extra quantisation step.
GGUF_OUTTYPES = ("bf16", "f16", "f32", "q8_0", "auto")
CONVERTER_NAME = "convert_hf_to_gguf.py"
INSTALL_HINT = (
    "clone https://github.com/ggml-org/llama.cpp, install its converter's requirements "
    "(pip install -r requirements/requirements-convert_hf_to_gguf.txt), then set LLAMA_CPP_DIR to the clone, "
    f"put {CONVERTER_NAME} on PATH, or pass the script as the converter"
)


class ExportError(RuntimeError):
    """An export that could not be completed; the message says why."""


class ExportUnavailable(ExportError):
    """The tool an export needs is not installed; the message names what to install or set."""


def merge_adapter(
    base_model: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16"
) -> Path:
    """Merge the PEFT adapter in `adapter_dir` into `base_model` loaded in `dtype`, and save the result to
    `out_dir` (model safetensors, config, generation config and tokenizer). Returns `out_dir`.

    Raises ValueError for an unknown dtype, a folder that holds no adapter, or a base stored quantised.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no PEFT adapter (no adapter_config.json)")

    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if getattr(AutoConfig.from_pretrained(str(base_model)), "quantization_config", None) is not None:
        raise ValueError(f"the base model {base_model} is stored quantised; merge into its unquantised original")
    # On the CPU: a merge is a few matrix additions per layer, and it must not compete with training for the GPU.
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=getattr(torch, dtype), device_map="cpu")
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    # The adapter folder carries the tokenizer training used; a bare adapter falls back to the base's.
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir if has_tokenizer else base_model))
    with staged_dir(out_dir) as partial:
        merged.save_pretrained(str(partial), safe_serialization=True)
        tokenizer.save_pretrained(str(partial))
    return out_dir


def export_gguf(
    merged_dir: str | Path, out_file: str | Path, *, converter: str | Path | None = None, outtype: str = "bf16"
) -> Path:
    """Convert a merged model folder to one GGUF file with llama.cpp's convert_hf_to_gguf.py. Returns `out_file`.

    Raises ExportUnavailable when no converter is found (see `find_converter`), ValueError for a folder that
    holds no model or an unknown outtype, and ExportError with the converter's output when it fails.
    """
    merged_dir, out_file = Path(merged_dir), Path(out_file)
    if outtype not in GGUF_OUTTYPES:
        raise ValueError(f"outtype must be one of {', '.join(GGUF_OUTTYPES)}, got {outtype!r}")
    if not (merged_dir / "config.json").is_file():
        raise ValueError(f"{merged_dir} holds no model (no config.json); merge the adapter first")
    script = find_converter(converter)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.partial")
    partial.unlink(missing_ok=True)
    runner = [sys.executable, str(script)] if script.suffix == ".py" else [str(script)]
    completed = subprocess.run(
        [*runner, str(merged_dir), "--outfile", str(partial), "--outtype", outtype],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        partial.unlink(missing_ok=True)
        output = (completed.stderr or completed.stdout).strip()[-2000:]
        raise ExportError(f"{script} failed with exit status {completed.returncode}: {output}")
    if not _is_gguf(partial):
        partial.unlink(missing_ok=True)
        raise ExportError(f"{script} exited normally but wrote no GGUF file")
    os.replace(partial, out_file)
    return out_file


def find_converter(converter: str | Path | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: `converter` (the script, or a llama.cpp folder holding it), else the one
    in $LLAMA_CPP_DIR, else the first on PATH. Raises ExportUnavailable naming what to install or set."""
    if converter is not None:
        path = Path(converter)
        script = path / CONVERTER_NAME if path.is_dir() else path
        if not script.is_file():
            raise ExportUnavailable(f"the GGUF converter {script} does not exist; {INSTALL_HINT}")
        return script
    llama_cpp = os.environ.get("LLAMA_CPP_DIR")
    if llama_cpp:
        script = Path(llama_cpp) / CONVERTER_NAME
        if not script.is_file():
            raise ExportUnavailable(f"LLAMA_CPP_DIR is {llama_cpp}, but it holds no {CONVERTER_NAME}; {INSTALL_HINT}")
        return script
    found = shutil.which(CONVERTER_NAME) or shutil.which(Path(CONVERTER_NAME).stem)
    if found is None:
        raise ExportUnavailable(
            f"GGUF export needs llama.cpp's {CONVERTER_NAME}, and none was found (LLAMA_CPP_DIR is not set and "
            f"PATH has none); {INSTALL_HINT}"
        )
    return Path(found)


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as data:
            return data.read(4) == b"GGUF"
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="merge a LoRA adapter into its base model")
    merge.add_argument("--base", required=True, help="the base model: a local folder or a Hugging Face id")
    merge.add_argument("--adapter", required=True, type=Path, help="the adapter folder (adapter_config.json, ...)")
    merge.add_argument("--out", required=True, type=Path, help="the folder to write the merged model to")
    merge.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="the merged weights' dtype")
    gguf = commands.add_parser("gguf", help="convert a merged model folder to GGUF with llama.cpp")
    gguf.add_argument("--merged", required=True, type=Path, help="a folder written by the merge command")
    gguf.add_argument("--out", required=True, type=Path, help="the GGUF file to write")
    gguf.add_argument("--outtype", default="bf16", choices=GGUF_OUTTYPES, help="the GGUF weights' type")
    gguf.add_argument("--converter", type=Path, help=f"llama.cpp's {CONVERTER_NAME}, or its folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "merge":
            written = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype)
        else:
            written = export_gguf(args.merged, args.out, converter=args.converter, outtype=args.outtype)
    except (ValueError, OSError, ExportUnavailable) as error:
        parser.error(str(error))
    except ExportError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
