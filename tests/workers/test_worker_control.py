"""The device part of the `prefloop_worker` reply: GPUs and their memory read from `nvidia-smi` (here a stand-in
script on PATH printing what the real one prints for that query), the worker's CUDA_VISIBLE_DEVICES passed on, and
no GPUs where there is no driver."""

import stat
from pathlib import Path

from workers.control import visible_gpus


def stand_in_nvidia_smi(folder: Path, output: str) -> Path:
    script = folder / "nvidia-smi"
    calls = folder / "calls.txt"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nprintf "{output}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return calls


def test_gpus_are_read_with_their_memory_for_the_devices_the_worker_may_use(tmp_path, monkeypatch) -> None:
    calls = stand_in_nvidia_smi(tmp_path, "1, NVIDIA H200, 71000, 143771\\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")

    assert visible_gpus() == [
        {"index": "1", "name": "NVIDIA H200", "memory_used_mib": 71000, "memory_total_mib": 143771}
    ]
    assert calls.read_text().split() == [
        "--query-gpu=index,name,memory.used,memory.total",
        "--format=csv,noheader,nounits",
        "--id=1",
    ]


def test_without_a_driver_there_are_no_gpus(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus() == []
    # A driver that answers with an error (no device found) reads the same.
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    assert visible_gpus() == []
