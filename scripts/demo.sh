#!/usr/bin/env bash
# The app and its worker on embedded defaults (SQLite + filesystem broker), seeded with a demo campaign.
# Set DATABASE_URL / CELERY_BROKER_URL to use PostgreSQL and Redis; PORT to change the port (default 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
BIN=.venv/bin
export PREFLOOP_VAR_DIR="${PREFLOOP_VAR_DIR:-$PWD/var}"
export TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
mkdir -p "$PREFLOOP_VAR_DIR/logs"

$BIN/python manage.py migrate --noinput >/dev/null
$BIN/python manage.py collectstatic --noinput >/dev/null

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  # On the filesystem broker the worker runs billiard's threaded pool, whose exit can wait forever on a queue lock
  # that a recycled child left held: a warm shutdown gets 30 s, then the processes are killed.
  for _ in $(seq 1 60); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The web app and the worker start before seed_demo: its choice of base model may convert a GGUF file first (about
# 20 s), and the demo's progress page (/demo/) shows that step, then every job the worker runs after it.
# One worker for the GPU queue and the default queue; the settings give it one task at a time, each in a fresh
# child process (which returns GPU memory): CELERY_WORKER_CONCURRENCY, CELERY_WORKER_MAX_TASKS_PER_CHILD.
$BIN/celery -A workers worker -Q gpu,default --loglevel INFO \
  -B --schedule "$PREFLOOP_VAR_DIR/celerybeat-schedule" \
  >"$PREFLOOP_VAR_DIR/logs/worker.log" 2>&1 &
pids+=($!)
$BIN/gunicorn prefloop.wsgi --bind "127.0.0.1:$PORT" --workers 2 --threads 4 --access-logfile - \
  >"$PREFLOOP_VAR_DIR/logs/web.log" 2>&1 &
pids+=($!)

echo "Prefloop starts at http://127.0.0.1:$PORT/ ; signed in, http://127.0.0.1:$PORT/demo/ shows the preparation."
echo "Demo accounts (passwords are new on every start):"
$BIN/python manage.py seed_demo

for _ in $(seq 1 60); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.5
done
echo
echo "Prefloop is running at http://127.0.0.1:$PORT/  (worker log: $PREFLOOP_VAR_DIR/logs/worker.log)"
echo "The worker now indexes the documents, trains the SFT adapter and generates answers; follow it at"
echo "http://127.0.0.1:$PORT/demo/ . Press Ctrl-C to stop."
wait -n "${pids[@]}"
