"""training/ is a plain ML library: it never imports Django, and its config modules load without torch."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_after(statement: str) -> set[str]:
    probe = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return {name.split(".")[0] for name in json.loads(completed.stdout.splitlines()[-1])}


def test_no_training_module_imports_django() -> None:
    modules = imported_after(
        "import training.tiny, training.generate, training.dpo, training.preferences, training.metrics_relay,"
        " training.sft, training.export, training.trainer_common"
    )

    assert "transformers" in modules
    assert "django" not in modules


def test_configs_and_preference_data_load_without_torch() -> None:
    # The web app validates generation settings and DPO configs and builds datasets; that must stay cheap.
    modules = imported_after(
        "import training.generate, training.dpo, training.sft, training.export, training.trainer_common,"
        " training.preferences"
    )

    assert "torch" not in modules
    assert "transformers" not in modules
