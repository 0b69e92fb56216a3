"""What a worker tells the admin's workers page (evaluator.selectors.workers) when asked, through Celery's own
remote control: one `prefloop_worker` inspect command, so that one broadcast gathers each worker's host, pool
processes, queues, running tasks (with the job each runs) and device, rather than four round trips.

Ask it by hand with: `celery -A workers inspect prefloop_worker --timeout 1`.

The command runs in the worker's main process, the one that forks the pool: it must never initialise CUDA there
(a forked child cannot use a CUDA context it inherits), so GPU memory is read with `nvidia-smi`, not torch.
"""

import os
import shutil
import socket
import subprocess
from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command

# nvidia-smi answers in tens of milliseconds; past this the page shows the device without its memory.
NVIDIA_SMI_TIMEOUT = 0.5


def visible_gpus() -> list[dict[str, Any]]:
    """The GPUs this worker may use (CUDA_VISIBLE_DEVICES, when set to indexes, narrows them), with their memory
    in MiB; an empty list on a machine without an NVIDIA driver, or when nvidia-smi does not answer in time."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return []
    query = [command, "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        query.append(f"--id={visible}")
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 4:
            continue
        index, name, used, total = fields
        gpus.append(
            {
                "index": index,
                "name": name,
                "memory_used_mib": int(used) if used.isdigit() else None,
                "memory_total_mib": int(total) if total.isdigit() else None,
            }
        )
    return gpus


def _running(state: Any, request: Any) -> dict[str, Any]:
    info: dict[str, Any] = request.info(safe=True)
    task = state.app.tasks.get(info.get("type") or info.get("name") or "")
    # A job task (workers.tasks.JobTask) names its job model; its one argument is the job's id.
    job_model = getattr(task, "job_model", "")
    first = next(iter(request.args or ()), None)
    if first is None:
        first = next(iter((request.kwargs or {}).values()), None)
    job_id = first if isinstance(first, int) else None
    return {
        "id": info.get("id"),
        "name": info.get("name") or info.get("type"),
        "worker_pid": info.get("worker_pid"),
        "time_start": info.get("time_start"),
        "job_model": job_model if job_id is not None else "",
        "job_id": job_id,
    }


@inspect_command()
def prefloop_worker(state: Any, **kwargs: Any) -> dict[str, Any]:
    """This worker as the workers page shows it."""
    stats = state.consumer.controller.stats()
    pool = stats.get("pool") or {}
    processes = pool.get("processes") if isinstance(pool, dict) else None
    return {
        # As evaluator.services.jobs.worker_identity names a job's holder: host:pid of the process running it.
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "processes": list(processes or []),
        "concurrency": pool.get("max-concurrency") if isinstance(pool, dict) else None,
        "uptime": stats.get("uptime"),
        "queues": sorted(queue.name for queue in state.consumer.task_consumer.queues),
        "running": [_running(state, request) for request in state.tset(worker_state.active_requests)],
        "gpus": visible_gpus(),
    }
