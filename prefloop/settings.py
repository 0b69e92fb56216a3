"""Prefloop settings, driven by environment variables.

With nothing set, Prefloop runs on embedded defaults (SQLite and a filesystem broker under ./var) so that
`make demo` needs no server. Set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis) for real deployments.
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from prefloop.env import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PREFLOOP_VAR_DIR", str(BASE_DIR / "var")))
# Adapters, checkpoints, indexes and datasets: a directory every worker can read and write.
ARTIFACTS_DIR = Path(env_str("PREFLOOP_ARTIFACTS_DIR", str(VAR_DIR / "artifacts")))
# GGUF bases converted to safetensors once (training/models.py), beside the other artifacts so every worker shares
# them; the training library, which never reads Django settings, finds the folder through the environment.
MODEL_CACHE_DIR = Path(env_str("PREFLOOP_MODEL_CACHE", str(ARTIFACTS_DIR / "models")))
os.environ["PREFLOOP_MODEL_CACHE"] = str(MODEL_CACHE_DIR)
# Artifacts on S3-compatible object storage (evaluator/artifacts.py): s3://bucket/prefix, and the endpoint of a
# server other than AWS (SeaweedFS, MinIO, Ceph…); keys come from the standard AWS variables. Unset: the artifacts
# folder alone, which every worker must then share. Set: ARTIFACTS_DIR is each machine's local cache.
PREFLOOP_ARTIFACT_STORE = env_str("PREFLOOP_ARTIFACT_STORE", "").strip()
PREFLOOP_ARTIFACT_STORE_ENDPOINT = env_str("PREFLOOP_ARTIFACT_STORE_ENDPOINT", "").strip()
# With a store, the most disk the copies of published artifacts may take on one machine (0: no limit): the least
# recently used beyond it are removed, never one used in the last PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES.
PREFLOOP_ARTIFACT_CACHE_GB = env_float("PREFLOOP_ARTIFACT_CACHE_GB", 0.0, minimum=0)
PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES = env_int("PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES", 60, minimum=0)
_BUCKET_URL = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?"
if PREFLOOP_ARTIFACT_STORE and not re.fullmatch(_BUCKET_URL, PREFLOOP_ARTIFACT_STORE):
    raise ImproperlyConfigured(
        f"PREFLOOP_ARTIFACT_STORE={PREFLOOP_ARTIFACT_STORE!r} is not s3://bucket or s3://bucket/prefix"
    )

DEBUG = env_bool("PREFLOOP_DEBUG", False)
_DEV_SECRET = "prefloop-insecure-development-key-change-me-before-any-deployment"  # noqa: S105 - local only
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET if DEBUG or not env_bool("PREFLOOP_PRODUCTION", False) else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when PREFLOOP_PRODUCTION=1")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "csp",
    "axes",
    "evaluator",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # A database, cache or broker that cannot be reached makes a view fail: answer with the 503 page. Failures
    # raised by the middleware above (a session saved on the way out) reach handler500, which does the same.
    "evaluator.middleware.ServiceUnavailableMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "prefloop.urls"
WSGI_APPLICATION = "prefloop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "evaluator.context_processors.roles",
                "csp.context_processors.nonce",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'prefloop.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        # A kept connection that the server dropped (a restart, a killed backend) is noticed and replaced when the
        # next request starts, rather than failing that request.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write to one file: wait for the lock and take it at BEGIN.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DATABASE_PREPARED_STATEMENTS", True
):
    # psycopg prepares a statement once a connection has run it 5 times, so the claim's joins, which cost more to
    # plan than to run, are planned once per connection. Needs server-side parameters. Turn off behind a
    # transaction-mode pooler (PgBouncer before 1.21).
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # An unreachable server fails a request (a 503 page) and the readiness check within seconds, instead of
    # holding every web thread until the server's own timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A cache every process shares where CACHE_URL names a Redis database: sessions are read from it (written through
# to the database, so a logout ends them everywhere), and progress counts and API throttles hold across processes.
# Without it, each process caches in its own memory and sessions live in the database alone.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL:
    if not CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"CACHE_URL must be a redis://, rediss:// or unix:// URL, not {CACHE_URL!r}")
    # Bounded waits: with the cache server gone, a request becomes a 503 page in seconds, not a hung thread.
    _CACHE_TIMEOUT = env_int("CACHE_SOCKET_TIMEOUT", 5, minimum=1)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {"socket_connect_timeout": _CACHE_TIMEOUT, "socket_timeout": _CACHE_TIMEOUT},
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes refuses a username+IP pair for 15 minutes after 5 failed logins, and an IP address after 50 failed
# logins across all usernames (one password sprayed over many accounts); it must come first. Failures count for
# the cool-off period; evaluator.login_throttle gives the address its own, higher limit, since many annotators may
# share one office address.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # ModelBackend that reads each request's user with their roles in one query (evaluator/roles.py).
    "evaluator.roles.RolesBackend",
    # Sessions signed in through ModelBackend before RolesBackend existed stay valid.
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "evaluator.login_throttle.PerAddressLimitHandler"
AXES_FAILURE_LIMIT = env_int("PREFLOOP_LOGIN_FAILURES_PER_USER", 5, minimum=1)
PREFLOOP_LOGIN_FAILURES_PER_IP = env_int("PREFLOOP_LOGIN_FAILURES_PER_IP", 50, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("PREFLOOP_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # one log line per lockout, not per login attempt
# Behind reverse proxies, the client's address is the one the nearest of them saw: the entry that many places from
# the right of X-Forwarded-For. 0 (the default) reads only the socket's address, as a header from a client that
# reaches the app directly is anyone's to forge. PREFLOOP_TRUSTED_PROXY_IPS (addresses or networks) narrows it:
# the header is read only on connections from those addresses.
PREFLOOP_TRUSTED_PROXY_COUNT = env_int("PREFLOOP_TRUSTED_PROXY_COUNT", 0, minimum=0)
PREFLOOP_TRUSTED_PROXY_IPS = env_list("PREFLOOP_TRUSTED_PROXY_IPS", [])
AXES_CLIENT_IP_CALLABLE = "evaluator.login_throttle.client_ip_address"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names (cache-busting) need `collectstatic`, run by every deployment; local runs serve from source.
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("PREFLOOP_PRODUCTION", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not env_bool("PREFLOOP_PRODUCTION", False)

# Uploads: prompt files are read in memory and validated whole before anything is stored.
PREFLOOP_MAX_UPLOAD_BYTES = env_int("PREFLOOP_MAX_UPLOAD_BYTES", 5 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = PREFLOOP_MAX_UPLOAD_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = PREFLOOP_MAX_UPLOAD_BYTES
# Caps on reading one uploaded document, in the worker that builds a collection's index (training.rag.
# ExtractionLimits, whose defaults these repeat): pages, characters, bytes of decompressed PDF page content, seconds
# and bytes of memory of the child process that extracts it.
PREFLOOP_DOCUMENT_MAX_PAGES = env_int("PREFLOOP_DOCUMENT_MAX_PAGES", 1_000, minimum=1)
PREFLOOP_DOCUMENT_MAX_CHARS = env_int("PREFLOOP_DOCUMENT_MAX_CHARS", 1_000_000, minimum=1)
PREFLOOP_DOCUMENT_MAX_CONTENT_BYTES = env_int("PREFLOOP_DOCUMENT_MAX_CONTENT_BYTES", 4_000_000, minimum=1)
PREFLOOP_DOCUMENT_MAX_SECONDS = env_float("PREFLOOP_DOCUMENT_MAX_SECONDS", 60.0, above=0)
PREFLOOP_DOCUMENT_MAX_MEMORY_BYTES = env_int("PREFLOOP_DOCUMENT_MAX_MEMORY_BYTES", 2 * 1024**3, minimum=1)

# Security headers; production values are switched on by PREFLOOP_PRODUCTION=1.
PRODUCTION = env_bool("PREFLOOP_PRODUCTION", False)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
# django-csp: scripts only from our origin or carrying the per-request nonce; no inline styles anywhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Celery: the broker only carries ids; every job's truth lives in the database.
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "processed", "control"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # Its exchange table too, or kombu writes it to ./control wherever the worker was started.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis: a training task may run for hours; redeliver only when its worker is really gone. A copy redelivered
    # while its job runs is harmless (it waits on the live holder; docs/deployment.md, "Jobs that survive faults"),
    # but the timeout must exceed PREFLOOP_JOB_HELD_COUNTDOWN. Unacknowledged messages past it are looked for every
    # CELERY_UNACKED_RESTORE_SECONDS; connecting to a broker that is gone fails within 5 s.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600, minimum=1),
        "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_SECONDS", 60, minimum=1),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# One task at a time in a fresh child process: a GPU worker hands its GPU memory back after every task, however
# it was started (command-line flags still override these).
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 1, minimum=1)
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 1, minimum=1)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_DEFAULT_QUEUE", "default")
CELERY_GPU_QUEUE = env_str("CELERY_GPU_QUEUE", "gpu")
# Model work goes to the GPU queue (one worker process per GPU); the rest to the default queue. Exports merge
# on the CPU (training.export.merge_adapter) and convert with llama.cpp, so they never hold a GPU slot.
CELERY_TASK_ROUTES = {
    "workers.tasks.generate_candidates": {"queue": CELERY_GPU_QUEUE},
    "workers.tasks.run_training_job": {"queue": CELERY_GPU_QUEUE},
    "workers.tasks.index_collection": {"queue": CELERY_GPU_QUEUE},
    "workers.tasks.export_model": {"queue": CELERY_TASK_DEFAULT_QUEUE},
    "workers.tasks.build_statistics_snapshot": {"queue": CELERY_TASK_DEFAULT_QUEUE},
    "workers.tasks.generate_qa_pairs": {"queue": CELERY_GPU_QUEUE},
    # A local judge loads its model on the GPU worker; an endpoint judge's requests are light, but one queue keeps
    # every judge job on the workers that are set up for model work.
    "workers.tasks.judge_campaign": {"queue": CELERY_GPU_QUEUE},
}
# Job recovery (evaluator/services/jobs.py): a running task beats its job's heartbeat this often; a job whose
# heartbeat is older than PREFLOOP_JOB_STALE_SECONDS, on a worker that is gone, is queued again by the reaper, which
# runs every PREFLOOP_REAPER_SECONDS (so a lost worker is noticed within stale + reaper seconds, under a minute),
# and which sends again a queued job whose task reached the broker longer than PREFLOOP_JOB_RESEND_SECONDS ago (a
# message lost with a broker restarted without persistence) or never did (the broker was down at the commit).
# A delivery that finds its job held by a live worker looks again after PREFLOOP_JOB_HELD_COUNTDOWN seconds.
PREFLOOP_JOB_HEARTBEAT_SECONDS = env_int("PREFLOOP_JOB_HEARTBEAT_SECONDS", 10, minimum=1)
PREFLOOP_JOB_STALE_SECONDS = env_int("PREFLOOP_JOB_STALE_SECONDS", 30, minimum=2)
PREFLOOP_JOB_RESEND_SECONDS = env_int("PREFLOOP_JOB_RESEND_SECONDS", 600, minimum=1)
PREFLOOP_JOB_HELD_COUNTDOWN = env_int("PREFLOOP_JOB_HELD_COUNTDOWN", 30, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reap-lost-jobs": {
        "task": "workers.tasks.reap_jobs",
        "schedule": env_int("PREFLOOP_REAPER_SECONDS", 20, minimum=1),
    },
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Models. The documented default needs the network; the demo falls back to the built-in tiny model.
PREFLOOP_BASE_MODEL = env_str("PREFLOOP_BASE_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
PREFLOOP_TINY_MODEL_DIR = Path(env_str("PREFLOOP_TINY_MODEL_DIR", str(VAR_DIR / "models" / "tiny")))
PREFLOOP_GENERATION_BATCH_SIZE = env_int("PREFLOOP_GENERATION_BATCH_SIZE", 8, minimum=1)
# A retrain runs as this many processes (`accelerate launch`; one per GPU) when above 1 or when an accelerate config
# file (DeepSpeed ZeRO, FSDP-QLoRA, ...: training/accelerate/, docs/deployment.md) is named.
PREFLOOP_TRAIN_PROCESSES = env_int("PREFLOOP_TRAIN_PROCESSES", 1, minimum=1)
PREFLOOP_ACCELERATE_CONFIG = env_str("PREFLOOP_ACCELERATE_CONFIG", "")
# How workers generate candidates: transformers (built in) or vllm (`pip install vllm` on the CUDA GPU workers).
PREFLOOP_GENERATION_BACKEND = env_choice("PREFLOOP_GENERATION_BACKEND", "transformers", ("transformers", "vllm"))

# Rating.
PREFLOOP_LEASE_MINUTES = env_int("PREFLOOP_LEASE_MINUTES", 20, minimum=1)
# Comparisons one claim locks and checks per index scan; expired leases handed back per claim at most.
PREFLOOP_CLAIM_CANDIDATES = env_int("PREFLOOP_CLAIM_CANDIDATES", 16, minimum=1)
PREFLOOP_LEASE_RELEASE_BATCH = env_int("PREFLOOP_LEASE_RELEASE_BATCH", 100, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["evaluator.permissions.IsResearcher"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env_str("PREFLOOP_API_RATE", "600/minute")},
    # Anonymous requests are throttled by the client's address, read as for logins. (DRF's default, None, would
    # take X-Forwarded-For whole from anyone.)
    "NUM_PROXIES": PREFLOOP_TRUSTED_PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Prefloop API",
    "DESCRIPTION": "Statistics and exports of Prefloop campaigns, for researchers (token authentication).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema maps every endpoint and parameter: for the API's own users (researchers and admins), not the
    # public. Token or session authentication, as for the API.
    "SERVE_PERMISSIONS": ["evaluator.permissions.IsResearcher"],
}

# The 503 page's Retry-After, when a database, cache or broker cannot be reached.
PREFLOOP_RETRY_AFTER_SECONDS = env_int("PREFLOOP_RETRY_AFTER_SECONDS", 30, minimum=1)
# How long /readyz waits for each of the database, broker and cache.
PREFLOOP_READINESS_TIMEOUT_SECONDS = env_int("PREFLOOP_READINESS_TIMEOUT_SECONDS", 2, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("PREFLOOP_LOG_LEVEL", "INFO")},
    "loggers": {"django": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
