#!/usr/bin/env bash
# The whole suite against the real PostgreSQL, Redis, a Celery worker process and headless Chromium.
# Run through `make test` (which builds the virtualenv first); extra pytest arguments: `make test ARGS="-k loop"`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis
ensure_chromium

export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/prefloop}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}"
export PREFLOOP_VAR_DIR="${PREFLOOP_TEST_VAR_DIR:-$PWD/var/test}"
export PREFLOOP_TEST_CACHE="${PREFLOOP_TEST_CACHE:-$PWD/var/test-cache}"
# Converted GGUF models outlive a run's var folder: each machine converts SmolLM2 once.
export PREFLOOP_MODEL_CACHE="${PREFLOOP_MODEL_CACHE:-$PREFLOOP_TEST_CACHE/models}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rm -rf "$PREFLOOP_VAR_DIR"

.venv/bin/ruff check .
DATABASE_URL=sqlite:///:memory: .venv/bin/mypy
DATABASE_URL=sqlite:///:memory: .venv/bin/python manage.py makemigrations --check --dry-run >/dev/null
.venv/bin/python -m pytest "$@"
