"""The Celery application.

Run a worker with: `celery -A workers worker -Q gpu,default --concurrency 1 --max-tasks-per-child 1`
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
