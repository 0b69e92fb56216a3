"""`bench/annotators.py` at a small size: every load runs against a real gunicorn without an error, and reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import database_url

REPO = Path(__file__).resolve().parent.parent.parent
LOADS = (
    "baseline_get_healthz",
    "signed_in_floor_get_home",
    "rating_get_and_post",
    "rating_htmx_post",
    "rating_htmx_at_human_pace",
)


@pytest.mark.server
@pytest.mark.django_db
def test_a_short_run_rates_through_every_load_and_reports_its_targets(tmp_path: Path) -> None:
    env = {
        **os.environ,
        # The server of the test database: the bench makes and drops a throwaway database of its own there.
        "DATABASE_URL": database_url({**connection.settings_dict, "NAME": "postgres"}),
        "PREFLOOP_VAR_DIR": str(tmp_path),
        # Named after the test database, so that runs against different test databases of one server never meet.
        "PREFLOOP_BENCH_DB": f"{connection.settings_dict['NAME']}_bench_annotators",
    }
    small = ["--sessions", "4", "--seconds", "1", "--think", "0.2", "--small", "200", "--large", "400"]
    done = subprocess.run(
        [sys.executable, "bench/annotators.py", *small], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    for load in LOADS:
        assert report[load]["errors"] == 0, (load, report[load]["first_error"])
        assert report[load]["requests"] > 0, load
    for load in ("rating_get_and_post", "rating_htmx_post", "rating_htmx_at_human_pace"):
        assert report[load]["judgements_per_s"] > 0, load
    claims = report["claim_latency"]
    assert claims["small"]["comparisons"] == 200 and claims["large"]["comparisons"] == 400
    assert set(report["targets"]) == {
        "cycles_to_baseline_requests",
        "rating_p99_ms",
        "human_pace_p99_ms",
        "claim_p50_large_to_small",
        "queries_per_cycle",
        "comparison_hot_update_ratio",
    }
    assert report["queries_per_cycle"]["statements"] == 12
    table = report["comparison_table"]
    assert table["n_tup_upd"] > 0 and 0 < table["n_tup_hot_upd"] <= table["n_tup_upd"]
    assert "fillfactor=80" in table["storage_parameters"]
    assert all(isinstance(target["met"], bool) for target in report["targets"].values())
