"""`bench/loop.py --quick` runs the whole scripted round on a throwaway PostgreSQL database and reports it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import database_url

REPO = Path(__file__).resolve().parent.parent.parent
PHASES = ("migrate", "seed", "generate_round_1", "rate_round_1", "train_dpo", "generate_round_2", "rate_round_2")


@pytest.mark.training
@pytest.mark.django_db
def test_the_quick_loop_generates_rates_retrains_and_rates_the_new_round(tiny_model_dir: Path) -> None:
    db = connection.settings_dict
    env = {
        **os.environ,
        # The server of the test database: the bench makes and drops a throwaway database of its own there.
        "DATABASE_URL": database_url({**db, "NAME": "postgres"}),
        "PREFLOOP_TINY_MODEL_DIR": str(tiny_model_dir),
    }
    done = subprocess.run(
        [sys.executable, "bench/loop.py", "--quick"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])

    assert report["database"] == "postgresql"
    sizes = report["sizes"]
    # Every open pair is rated by each of the k scripted annotators, in both rounds.
    assert sizes["judgements_round_1"] == sizes["annotators"] * (sizes["prompts"] - sizes["held_out_prompts"])
    assert sizes["judgements_round_2"] == sizes["annotators"] * sizes["held_out_prompts"]
    assert sizes["dpo_records"] > 0 and sizes["dpo_steps"] == report["settings"]["dpo"]["max_steps"]
    assert report["training"]["status"] == "Succeeded" and report["training"]["first_loss"] is not None
    by_judgement = report["child_vs_parent_by_judgement"]
    assert by_judgement["wins"] + by_judgement["ties"] + by_judgement["losses"] == sizes["judgements_round_2"]
    assert 0 <= by_judgement["p_value"] <= 1
    assert report["rates"]["held_out_child"]["answers"] == sizes["held_out_prompts"]
    assert set(PHASES) <= set(report["seconds"])
    # The throwaway database is gone again.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = 'prefloop_bench_loop'")
        assert cursor.fetchone() == (0,)
