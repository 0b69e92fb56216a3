"""The Celery application.

Run a worker with: `celery -A workers worker -Q gpu,default`. The settings run one task at a time, each in a
fresh child process, so a GPU worker hands its GPU memory back after every task (CELERY_WORKER_CONCURRENCY and
CELERY_WORKER_MAX_TASKS_PER_CHILD change that; so do --concurrency and --max-tasks-per-child).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])

# The workers page's remote-control command (registered on import, answered by every worker of this app).
import workers.control  # noqa: E402, F401
