"""training/ is a plain ML library: none of its modules imports Django, every one imports without vLLM, and the
modules the web app imports (configs, generation settings, preference data) load without torch."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter, so that nothing the test session imported counts. walk_packages finds every module
# and package under training/, however deep, without a list to keep up to date.
IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import training
names = sorted(module.name for module in pkgutil.walk_packages(training.__path__, "training."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def run_probe(code: str) -> dict[str, list[str]]:
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The report is the last line: a library may print a notice of its own before it.
    return json.loads([line for line in completed.stdout.split("\n") if line][-1])


def top_level(modules: list[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_every_training_module_imports_without_django_or_vllm() -> None:
    probe = run_probe(IMPORT_EVERY_MODULE)

    imported = set(probe["imported"])
    assert {"training.dpo", "training.trainers", "training.generation.hf", "training.generation.vllm"} <= imported
    assert {"training.generation.cli", "training.generation.__main__", "training.rag", "training.tiny"} <= imported
    loaded = top_level(probe["loaded"])
    assert {"torch", "transformers", "trl", "peft"} <= loaded
    assert "django" not in loaded
    assert "vllm" not in loaded  # imported only when the vLLM backend is chosen


def test_configs_generation_settings_and_preference_data_load_without_torch() -> None:
    # The web app validates generation settings and job configs, builds datasets and reads documents; that must
    # stay cheap.
    modules = [
        "training.generation",
        "training.generation.settings",
        "training.dpo",
        "training.sft",
        "training.export",
        "training.trainer_common",
        "training.preferences",
        "training.rag",
    ]
    probe = run_probe(
        f"import json, sys; import {', '.join(modules)}; print(json.dumps({{'loaded': sorted(sys.modules)}}))"
    )

    loaded = top_level(probe["loaded"])
    assert "torch" not in loaded
    assert "transformers" not in loaded
    assert "django" not in loaded
