"""Celery app and thin tasks that bridge the web app and the `training` library."""

from workers.celery import app

__all__ = ["app"]
