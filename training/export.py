"""Model export: a LoRA adapter merged into its base (bf16 safetensors), that as GGUF, or the adapter alone as a
GGUF LoRA.

The merge loads the base in bfloat16 (never the 4-bit weights the adapter was trained against: merging into
quantised weights would round the adapter away), applies the PEFT adapter, folds it into the weights with
merge_and_unload() and saves the model as safetensors with the adapter's tokenizer.

GGUF is written by llama.cpp's own converters (convert_hf_to_gguf.py for a model, convert_lora_to_gguf.py for an
adapter), run in a subprocess with llama.cpp's gguf-py first on PYTHONPATH: the converter and its gguf-py change
together, and the `gguf` package installed here may be another version. The converters come from $LLAMA_CPP_DIR (a
llama.cpp clone) when it is set, else from the llama-cpp-python source distribution, which vendors llama.cpp: pip
fetches it once (LLAMA_CPP_PYTHON_VERSION) and only the converters and gguf-py are kept, in
$PREFLOOP_LLAMA_CPP_CACHE or ~/.cache/prefloop/llama-cpp. The converters write f32, f16, bf16 and q8_0; q4_0 is
their bf16 output quantised here with gguf's numpy quantisers. Every output appears complete or not at all: it is
written beside its target and renamed into place.

Run:

    python -m training.export merge --base var/models/tiny --adapter var/dpo-run/adapter --out var/merged \\
        [--dtype bfloat16]
    python -m training.export gguf --merged var/merged --out var/model.gguf [--outtype bf16] [--converter DIR]
    python -m training.export lora-gguf --adapter var/dpo-run/adapter --base var/models/tiny --out var/lora.gguf \\
        [--outtype f16] [--converter DIR]
    python -m training.export converter

Each prints the folder or file it wrote (`converter`: the llama.cpp folder it found or fetched). Bad arguments (a
missing adapter, an unknown dtype, a converter that cannot be had) exit with status 2 and say what is wrong; a
converter that fails exits with status 1 and its output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from training.models import resolve_model
from training.trainer_common import staged_dir

DTYPES = ("bfloat16", "float16", "float32")
# What the converters write themselves, and q4_0, quantised here from their bf16 output.
GGUF_OUTTYPES = ("bf16", "f16", "f32", "q8_0", "q4_0", "auto")
LORA_OUTTYPES = ("bf16", "f16", "f32", "q8_0", "auto")
CONVERTER_NAME = "convert_hf_to_gguf.py"
LORA_CONVERTER_NAME = "convert_lora_to_gguf.py"
# The llama-cpp-python release whose vendored llama.cpp converters are checked against the tiny model (Llama) by
# tests/training/test_export.py. Raise it together with a run of those tests.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# What a converter needs from a llama.cpp tree: the scripts, the `conversion` package they import (newer
# llama.cpp), and gguf-py, the gguf library of the same commit.
CONVERTER_FILES = (CONVERTER_NAME, LORA_CONVERTER_NAME, "conversion", "gguf-py", "LICENSE")
NO_CONVERTER_HINT = (
    "without network access, clone https://github.com/ggml-org/llama.cpp elsewhere, copy it here, install its "
    "converter's requirements (requirements/requirements-convert_hf_to_gguf.txt) and set LLAMA_CPP_DIR to it"
)
PIP_TIMEOUT_S = 15 * 60


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

    base_model = resolved_base(base_model)

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

    `outtype` is one of GGUF_OUTTYPES; q4_0 is the converter's bf16 file quantised here (`quantize_gguf`). The
    converter is `converter` (a llama.cpp folder) or `converter_dir()`'s. Raises ExportUnavailable when no
    converter can be had or it lacks a Python package, ValueError for a folder that holds no model or an unknown
    outtype, and ExportError with the converter's output when it fails.
    """
    merged_dir, out_file = Path(merged_dir), Path(out_file)
    if outtype not in GGUF_OUTTYPES:
        raise ValueError(f"outtype must be one of {', '.join(GGUF_OUTTYPES)}, got {outtype!r}")
    if not (merged_dir / "config.json").is_file():
        raise ValueError(f"{merged_dir} holds no model (no config.json); merge the adapter first")
    llama_cpp = converter_dir(converter)
    with _staged_file(out_file) as partial:
        if outtype != "q4_0":
            _convert(llama_cpp, CONVERTER_NAME, [str(merged_dir), "--outfile", str(partial), "--outtype", outtype])
        else:
            # bf16 holds a bf16 merge exactly, so the 4-bit blocks are computed from the merged weights themselves.
            unquantised = partial.with_name(f"{partial.name}.bf16")
            try:
                _convert(
                    llama_cpp, CONVERTER_NAME, [str(merged_dir), "--outfile", str(unquantised), "--outtype", "bf16"]
                )
                quantize_gguf(unquantised, partial)
            finally:
                unquantised.unlink(missing_ok=True)
    return out_file


def export_lora_gguf(
    adapter_dir: str | Path,
    base_model: str | Path,
    out_file: str | Path,
    *,
    converter: str | Path | None = None,
    outtype: str = "f16",
) -> Path:
    """Convert the PEFT LoRA adapter in `adapter_dir` to a GGUF LoRA with llama.cpp's convert_lora_to_gguf.py,
    for use with the GGUF of `base_model` (llama.cpp's --lora). The converter reads only the base's config.
    Returns `out_file`.

    Raises as `export_gguf` does, and ValueError for a folder that holds no adapter.
    """
    adapter_dir, out_file = Path(adapter_dir), Path(out_file)
    if outtype not in LORA_OUTTYPES:
        raise ValueError(f"outtype must be one of {', '.join(LORA_OUTTYPES)}, got {outtype!r}")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no PEFT adapter (no adapter_config.json)")
    base = resolved_base(base_model)
    # A local folder is read as it is; anything else is a Hugging Face id, which the converter fetches the
    # config of (without --base it would take the id the adapter was trained from, which may be a stale path).
    base_arguments = ["--base", base] if Path(base).is_dir() else ["--base-model-id", base]
    llama_cpp = converter_dir(converter)
    with _staged_file(out_file) as partial:
        arguments = [str(adapter_dir), *base_arguments, "--outfile", str(partial), "--outtype", outtype]
        _convert(llama_cpp, LORA_CONVERTER_NAME, arguments)
    return out_file


def converter_dir(
    converter: str | Path | None = None, *, cache_dir: str | Path | None = None, version: str | None = None
) -> Path:
    """The llama.cpp folder whose convert_hf_to_gguf.py, convert_lora_to_gguf.py and gguf-py the exports run.

    `converter` (a llama.cpp folder, or its convert_hf_to_gguf.py) when given; else $LLAMA_CPP_DIR when set;
    else the converters vendored by the llama-cpp-python source distribution of `version`
    (LLAMA_CPP_PYTHON_VERSION), fetched with pip on first use and kept in `cache_dir` ($PREFLOOP_LLAMA_CPP_CACHE,
    else ~/.cache/prefloop/llama-cpp). Raises ExportUnavailable naming what to set when none can be had.
    """
    if converter is not None:
        path = Path(converter)
        folder = path.parent if path.name == CONVERTER_NAME else path
        if not (folder / CONVERTER_NAME).is_file():
            raise ExportUnavailable(f"the GGUF converter {folder / CONVERTER_NAME} does not exist")
        return folder
    llama_cpp = os.environ.get("LLAMA_CPP_DIR")
    if llama_cpp:
        if not (Path(llama_cpp) / CONVERTER_NAME).is_file():
            raise ExportUnavailable(f"LLAMA_CPP_DIR is {llama_cpp}, but it holds no {CONVERTER_NAME}")
        return Path(llama_cpp)
    version = version or LLAMA_CPP_PYTHON_VERSION
    if cache_dir is None:
        cache_dir = os.environ.get("PREFLOOP_LLAMA_CPP_CACHE") or Path.home() / ".cache" / "prefloop" / "llama-cpp"
    folder = Path(cache_dir) / f"llama-cpp-python-{version}"
    if (folder / CONVERTER_NAME).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as download:
        extract_converters(_download_sdist(version, Path(download)), folder)
    return folder


def extract_converters(sdist: str | Path, folder: str | Path) -> Path:
    """Extract the converters, `conversion`, gguf-py and the licence of the llama.cpp vendored in a
    llama-cpp-python source archive (`<top>/vendor/llama.cpp/...`) into `folder`, which appears whole or not at all
    (a concurrent extraction that got there first is kept). Returns `folder`.

    Raises ExportError for an archive with an absolute or `..` member name, a link among the wanted files, or
    without the converter.
    """
    sdist, folder = Path(sdist), Path(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.extracting-", dir=folder.parent))
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ExportError(f"{sdist.name} holds the unsafe path {member.name!r}; nothing was extracted")
                relative = _vendored_converter_path(name)
                if relative is None or member.isdir():
                    continue
                if not member.isfile():
                    raise ExportError(f"{sdist.name} holds {member.name} as a link or device, not a file")
                source = archive.extractfile(member)
                assert source is not None  # a regular file always has contents
                target = staging.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as written:
                    shutil.copyfileobj(source, written)
        if not (staging / CONVERTER_NAME).is_file() or not (staging / "gguf-py" / "gguf").is_dir():
            raise ExportError(f"{sdist.name} holds no vendor/llama.cpp/{CONVERTER_NAME} with its gguf-py")
        # mkdtemp makes the folder private, but the web app and the workers must read it too.
        staging.chmod(0o755)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / CONVERTER_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _vendored_converter_path(name: PurePosixPath) -> PurePosixPath | None:
    """`a/vendor/llama.cpp/gguf-py/gguf/x.py` → `gguf-py/gguf/x.py` for the files CONVERTER_FILES names."""
    parts = name.parts
    if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or parts[3] not in CONVERTER_FILES:
        return None
    return PurePosixPath(*parts[3:])


def _download_sdist(version: str, folder: Path) -> Path:
    requirement = f"llama-cpp-python=={version}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", requirement, "-d"]
    try:
        completed = subprocess.run(
            [*command, str(folder)], capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise ExportUnavailable(
            f"GGUF export needs llama.cpp's converters, and `pip download {requirement}` took over "
            f"{PIP_TIMEOUT_S // 60} minutes; {NO_CONVERTER_HINT}"
        ) from None
    archives = sorted(folder.glob("llama_cpp_python-*.tar.gz"))
    if completed.returncode != 0 or not archives:
        output = (completed.stderr or completed.stdout).strip()[-1000:]
        raise ExportUnavailable(
            f"GGUF export needs llama.cpp's converters, which come from the llama-cpp-python source package, but "
            f"`pip download {requirement}` failed ({output}); {NO_CONVERTER_HINT}"
        )
    return archives[0]


# Runs a converter script as its __main__ after two checks and one fallback. The gguf module must be the
# converter's own gguf-py. llama.cpp recognises a BPE tokenizer's pre-tokenizer only by the hash of the token ids of
# a fixed text, so no tokenizer trained here (the tiny model's) is ever recognised; when the hash is unknown and
# tokenizer.json says the pre-tokenizer is GPT-2's byte-level split with nothing before it, that is llama.cpp's
# "gpt-2" pre-tokenizer, and the conversion goes on with it. Any other unknown one still fails.
_RUNNER = """
import json, runpy, sys
from pathlib import Path

script, gguf_py = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
sys.argv = [str(script), *sys.argv[3:]]
sys.path.insert(0, str(script.parent))
import gguf
if not Path(gguf.__file__).resolve().is_relative_to(gguf_py):
    sys.exit(f"the converter needs its own gguf-py ({gguf_py}), but Python imported {gguf.__file__}")
try:
    from conversion import base
except ImportError:
    base = None
if base is not None and hasattr(base, "TextModel"):
    recognised_pre_tokenizer = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return recognised_pre_tokenizer(self, tokenizer)
        except NotImplementedError:
            path = Path(self.dir_model) / "tokenizer.json"
            spec = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            pre = spec.get("pre_tokenizer") or {}
            gpt2 = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
            if spec.get("normalizer") is None and gpt2:
                base.logger.warning("unknown BPE tokenizer with GPT-2's byte-level pre-tokenizer: using gpt-2")
                return "gpt-2"
            raise

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
runpy.run_path(str(script), run_name="__main__")
"""


def _convert(llama_cpp: Path, script_name: str, arguments: Sequence[str]) -> None:
    """Run llama.cpp's `script_name` with `arguments` (paths absolute), its gguf-py first on PYTHONPATH."""
    script = llama_cpp / script_name
    if not script.is_file():
        raise ExportUnavailable(f"{llama_cpp} holds no {script_name}; point LLAMA_CPP_DIR at a newer llama.cpp")
    gguf_py = llama_cpp / "gguf-py"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(gguf_py), os.environ.get("PYTHONPATH")])),
    }
    completed = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(script), str(gguf_py), *arguments],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    output = f"{completed.stdout}\n{completed.stderr}".strip()
    if completed.returncode != 0:
        missing = re.search(r"No module named '([\w.]+)'", output)
        if missing:
            package = missing.group(1).split(".")[0]
            raise ExportUnavailable(
                f"llama.cpp's {script_name} needs the Python package {package}: pip install {package}"
            )
        if "BPE pre-tokenizer was not recognized" in output:
            raise ExportError(
                f"llama.cpp's {script_name} does not know this model's tokenizer: it recognises a BPE "
                "pre-tokenizer only by the hash of the tokens of a fixed text, and this one's is not among those "
                "it lists (convert_hf_to_gguf_update.py adds it)"
            )
        raise ExportError(f"{script} failed with exit status {completed.returncode}: {output[-2000:]}")


def quantize_gguf(source: str | Path, out_file: str | Path) -> Path:
    """Write `source` (a GGUF model of f32, f16 or bf16 weights) to `out_file` as llama.cpp's Q4_0 file type, with
    gguf's numpy quantisers: every 2-D weight whose rows split into 32-value blocks becomes Q4_0, except the output
    layer (output.weight, or the token embedding that stands in for it when the two are tied), which becomes Q8_0
    (llama.cpp gives it Q6_K, which gguf cannot quantise in Python); norms and anything else stay as they are.
    Returns `out_file`.
    """
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize

    source, out_file = Path(source), Path(out_file)
    reader = gguf.GGUFReader(source)
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(out_file, architecture, endianess=reader.endianess)
    for field in reader.fields.values():
        # GGUF.* are the header's own values and the architecture is the writer's argument: the writer adds them.
        if field.name.startswith("GGUF.") or field.name in (
            gguf.Keys.General.ARCHITECTURE,
            gguf.Keys.General.FILE_TYPE,
        ):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    names = {tensor.name for tensor in reader.tensors}
    output_layer = "output.weight" if "output.weight" in names else "token_embd.weight"
    unquantised = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
    plan: list[tuple[tuple[int, ...], gguf.GGMLQuantizationType | None]] = []
    for tensor in reader.tensors:
        shape = tuple(int(size) for size in reversed(tensor.shape))  # numpy's order: rows, then columns
        target = None
        if tensor.tensor_type in unquantised and len(shape) == 2 and shape[1] % 32 == 0:
            target = gguf.GGMLQuantizationType.Q8_0 if tensor.name == output_layer else gguf.GGMLQuantizationType.Q4_0
        plan.append((shape, target))
        if target is None:
            data = tensor.data
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, target)
            writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # One tensor at a time, so a model is never held in memory whole.
    for tensor, (shape, target) in zip(reader.tensors, plan, strict=True):
        if target is None:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
        else:
            writer.write_tensor_data(quantize(dequantize(tensor.data, tensor.tensor_type).reshape(shape), target))
    writer.close()
    return out_file


@contextlib.contextmanager
def _staged_file(out_file: Path) -> Iterator[Path]:
    """`with _staged_file(out) as partial:` write a GGUF file to `partial`; it replaces `out` only when the block
    ends normally and `partial` is a GGUF file, and never stays behind."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.partial").absolute()
    partial.unlink(missing_ok=True)
    try:
        yield partial
        if not _is_gguf(partial):
            raise ExportError(f"the converter exited normally but wrote no GGUF file for {out_file}")
        os.replace(partial, out_file)
    finally:
        partial.unlink(missing_ok=True)


def resolved_base(base_model: str | Path) -> str:
    """The base model as transformers loads it: a local folder or a Hugging Face id. A GGUF file or a shipped
    short name becomes its converted folder (training.models.resolve_model; ModelSpecError, a ValueError, when it
    cannot)."""
    return resolve_model(str(base_model))


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
    gguf.add_argument("--converter", type=Path, help="a llama.cpp folder (default: LLAMA_CPP_DIR, else fetched)")
    lora = commands.add_parser("lora-gguf", help="convert a LoRA adapter alone to a GGUF LoRA with llama.cpp")
    lora.add_argument("--adapter", required=True, type=Path, help="the adapter folder (adapter_config.json, ...)")
    lora.add_argument("--base", required=True, help="the base model it was trained on: a folder or a Hugging Face id")
    lora.add_argument("--out", required=True, type=Path, help="the GGUF file to write")
    lora.add_argument("--outtype", default="f16", choices=LORA_OUTTYPES, help="the GGUF weights' type")
    lora.add_argument("--converter", type=Path, help="a llama.cpp folder (default: LLAMA_CPP_DIR, else fetched)")
    commands.add_parser("converter", help="print the llama.cpp converters' folder, fetching them if needed")
    args = parser.parse_args(argv)
    try:
        if args.command == "merge":
            written = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype)
        elif args.command == "gguf":
            written = export_gguf(args.merged, args.out, converter=args.converter, outtype=args.outtype)
        elif args.command == "lora-gguf":
            written = export_lora_gguf(
                args.adapter, args.base, args.out, converter=args.converter, outtype=args.outtype
            )
        else:
            written = converter_dir()
    except (ValueError, OSError, ExportUnavailable) as error:
        parser.error(str(error))
    except ExportError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
