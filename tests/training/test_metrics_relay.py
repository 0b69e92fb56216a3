"""The metrics stream a resumed run keeps: the lines of the steps up to its checkpoint, read back intact."""

import json
from pathlib import Path

from training.metrics_relay import MetricsRelay


def test_a_resumed_run_keeps_the_lines_up_to_its_step_even_when_a_value_holds_a_line_separator(
    tmp_path: Path,
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    entries = [
        {"step": 1, "loss": 0.69, "note": "line\u2028separator, paragraph\u2029separator, next\x85line"},
        {"step": 2, "loss": 0.68},
        {"step": 3, "loss": 0.67},
        {"step": 3, "train_runtime": 9.5},
    ]
    metrics.write_text("".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries), encoding="utf-8")

    MetricsRelay(metrics, resume_step=2)

    assert [json.loads(line) for line in metrics.read_text(encoding="utf-8").split("\n") if line] == entries[:2]
