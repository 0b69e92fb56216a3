"""Many annotators rating at once over HTTP, and the cost of one claim with 10k against 1M comparisons.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/annotators.py \
        [--sessions 64] [--seconds 15] [--workers 4] [--threads 4] [--small 10000] [--large 1000000] [--think 5]

DATABASE_URL names the server (any database on it). The script creates a throwaway database
`prefloop_bench_annotators` (PREFLOOP_BENCH_DB names another), migrates it, seeds annotators (logged in by writing
their sessions straight into the session table: no password hashing in the measurement) and one campaign of 20,000
comparisons (k = 3), and starts `gunicorn prefloop.wsgi` (gthread workers) on a free 127.0.0.1 port against it.
Then, for `--seconds` each, `--sessions` threads with one keep-alive `http.client` connection and one logged-in
annotator each:

- baseline: GET /healthz — Prefloop's most trivial Django view (plain "ok" through the whole middleware stack,
  no query): what the server, the client and the machine can do at best;
- signed-in floor: GET / as the annotator, which reads the session and the user with their roles (two queries)
  and redirects to /rate/: the least any rating request costs before it claims or stores anything;
- rating: GET /rate/ (claims the next comparison) then POST its form (CSRF token read from the page), the
  redirect back to /rate/ being the next loop's GET: the page without JavaScript;
- rating over HTMX: what the page does in a browser: POST the form with `HX-Request`, which stores the
  judgement and answers with the next pair (one request a judgement);
- rating over HTMX at a human pace, for 2 × `--seconds`: the same, each session pausing `--think` seconds on
  average (uniform over ±50 %) after each pair, as an annotator reading two answers would, on a new connection
  after each pause (the server closes idle keep-alive connections after 2 s): the latency an
  annotator sees when the server is not saturated (the loads above never pause, so theirs is mostly queueing).

After the loads it reports what one rating cycle costs the database: `queries_per_cycle`, the statements one
HTMX submission sends (the session user and roles, the submission, the next claim and its page), counted
in-process through Django's test client over `CYCLE_SAMPLES` cycles, with the transactions' BEGIN/COMMIT counted
apart; and `comparison_table`, how the comparison table took the HTTP loads: updates (`n_tup_upd`), of which made
in place (`n_tup_hot_upd`, a HOT update: no index touched, nothing left for VACUUM to clean in the indexes), their
ratio, and `n_dead_tup`/`n_live_tup` at the end, with the table's storage parameters (fillfactor, autovacuum).

It then times the service call `assignment_next` in-process for 300 fresh annotators against a
campaign of `--small` comparisons and the same campaign grown to `--large` (rows made with generate_series).
The database is dropped at the end, gunicorn stopped. Every loop is bounded by time or count and talks only to
127.0.0.1. Prints one JSON report: requests/s and p50/p99 latency of both loads, judgements/s, the ratio of
rating to baseline requests/s, and the claim latency p50/p99 at both sizes; `targets` sets each target against
its measured value: rating cycles (judgements) per second ≥ 0.4 × the baseline's requests per second, rating
p99 < 100 ms, the human-pace p99 < 150 ms (the target holds for 64 sessions, the default), claim p50 at the large
size ≤ 1.5 × at the small one, ≤ 12 statements per rating cycle, and ≥ 80 %
of the comparison table's updates made in place (HOT). With closed-loop sessions the p99 is mostly
queueing: about sessions ÷ throughput once the server is saturated, so `--sessions 8` shows the service time.
Each load also reports the CPU seconds per request spent by the load generator (this process), by gunicorn and
by the bench database's PostgreSQL backends, and the machine's busy share: client, server and database share the
machine's cores, so a load the client itself slows is seen.
Timings are wall-clock on a shared machine: run twice, compare.

Against another commit, side by side:

    DATABASE_URL=… .venv/bin/python bench/annotators.py --baseline-ref 154f1f2 [--rounds 6] [--seconds 15]

checks the commit out into a temporary `git worktree` (removed at the end) and runs both versions at once, each
with the same virtualenv, its own throwaway database (`PREFLOOP_BENCH_DB` and `…_baseline`) migrated and seeded
by its own code (a campaign of `--rounds` × `--seconds` × 100 comparisons, at least 20,000, so neither runs
out), and its own gunicorn (the same `--workers` × `--threads`). It then measures the closed-loop
HTMX rating load for `--seconds` on each side in turn, `--rounds` times, the side that goes first alternating
from round to round (new, old; old, new; …) so that a machine that slows down over the run weighs on both
alike. It reports each side's judgements/s per round and median, and the ratio new / old per round (the two
loads of a round ran next to each other) with its median, lowest and highest; target: median ratio ≥ 1.6.
If CACHE_URL is set, both sides share that cache (their keys name a campaign by its creation time, so they
never meet).

Over a long run:

    DATABASE_URL=… .venv/bin/python bench/annotators.py --duration 600 [--window 30] [--baseline-ref REF]

runs the closed-loop HTMX rating load once for `--duration` seconds (on a campaign big enough not to run out:
`--duration` × 100 comparisons, at least 20,000) and reads, every `--window` seconds, the CPU the database's
client backends spent (`/proc/<pid>/stat` of the `pg_stat_activity` backends of the bench database) divided by
the requests completed in that window, with the window's judgements/s, p99, gunicorn CPU per request, the
comparison table's dead row versions (`n_dead_tup`), the share of its updates made in place (HOT) and the
autovacuums that ran. On a server with autovacuum turned off (as this project's CI machines run PostgreSQL), the
bench itself runs `VACUUM (ANALYZE)` on the rating loop's tables at the end of each window, standing in for
autovacuum (`bench_vacuum_s`; its CPU is not counted, like an autovacuum worker's): without it the run measures
dead row versions piling up as no deployment would let them. It reports the last window's database CPU per
request against the first's and the slope of a straight line fitted through all windows; target "flat": last ≤
1.25 × first. With `--baseline-ref` the
commit's version runs the same load after today's, for comparison.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCH_DB = os.environ.get("PREFLOOP_BENCH_DB", "prefloop_bench_annotators")
# The tree the seeding step imports its models from (the baseline's worktree for the old side).
CODE_VARIABLE = "PREFLOOP_BENCH_CODE"
HTTP_COMPARISONS = 20_000
# Comparisons seeded a second of rating on one side (a long run, or all rounds): 3 judgements a comparison, so
# room for 300 judgements/s.
COMPARISONS_PER_SECOND = 100
CLAIM_SAMPLES = 300
CYCLE_SAMPLES = 20
FLAT_LIMIT = 1.25
RATIO_TARGET = 1.6
HUMAN_PACE_P99_MS = 150
TOKEN = re.compile(r'action="(/rate/[0-9a-f-]+/)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
RADIO = re.compile(r'type="radio" name="([a-z_]+)"')


@dataclass
class Side:
    """One version of Prefloop under load: the tree its code comes from, its throwaway database, its gunicorn."""

    name: str
    code: Path
    database: str
    server_url: str
    var_dir: Path
    gunicorn: subprocess.Popen | None = None
    port: int = 0
    cookies: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return urlunsplit(urlsplit(self.server_url)._replace(path=f"/{self.database}"))

    def env(self) -> dict[str, str]:
        # Database connections kept for the whole run: backends live as long as the loads, so their CPU is all counted.
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "PREFLOOP_VAR_DIR": str(self.var_dir),
            "DATABASE_CONN_MAX_AGE": "3600",
            "DJANGO_SETTINGS_MODULE": "prefloop.settings",
        }

    def servers(self) -> list[int]:
        """gunicorn's master and workers (read again at each use: a worker that died was replaced)."""
        if self.gunicorn is None:
            return []
        return [self.gunicorn.pid, *_children(self.gunicorn.pid)]


def main(args: argparse.Namespace) -> object:
    if args.seed_only:
        return _seed_only(args)
    if args.duration:
        return _long_run(args)
    if args.baseline_ref:
        return _side_by_side(args)
    return _full_run(args)


def _full_run(args: argparse.Namespace) -> dict[str, object]:
    """Every load on today's tree, then the statements a cycle sends and the claim's latency, in-process."""
    side = _side("new", REPO, BENCH_DB)
    with _running(side, args, HTTP_COMPARISONS):
        try:
            _load(side, 2, _baseline_loop)  # warm-up, not measured: imports, connections, templates
            baseline = _load(side, args.seconds, _baseline_loop)
            floor = _load(side, args.seconds, _signed_in_loop)
            table_before = _comparison_table(side)
            rating = _load(side, args.seconds, _rating_loop)
            htmx = _load(side, args.seconds, _htmx_rating_loop)
            paced = _load(side, 2 * args.seconds, _human_paced(_htmx_rating_loop, args.think))
            table = _comparison_table_report(table_before, _comparison_table(side))
            os.environ.update({key: side.env()[key] for key in ("DATABASE_URL", "PREFLOOP_VAR_DIR")})
            os.environ["DJANGO_SETTINGS_MODULE"] = "prefloop.settings"
            import django

            django.setup()
            queries = _queries_per_cycle()
            claims = _claim_latency(args.small, args.large)
        finally:
            if "django.db" in sys.modules:
                from django.db import connections

                connections.close_all()
    return {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "gunicorn": _gunicorn_label(args),
        "baseline_get_healthz": baseline,
        "signed_in_floor_get_home": floor,
        "floor_to_baseline_requests_ratio": _requests_ratio(floor, baseline),
        "rating_get_and_post": rating,
        "rating_htmx_post": htmx,
        "rating_htmx_at_human_pace": {"think_seconds": args.think, **paced},
        "rating_to_baseline_requests_ratio": _requests_ratio(rating, baseline),
        "claim_latency": claims,
        "htmx_to_baseline_requests_ratio": _requests_ratio(htmx, baseline),
        "queries_per_cycle": queries,
        "comparison_table": table,
        "targets": _targets(baseline, rating, htmx, paced, claims, queries, table, sessions=args.sessions),
    }


def _side_by_side(args: argparse.Namespace) -> dict[str, object]:
    """Today's tree and `--baseline-ref` under the same closed-loop HTMX rating load, in alternating rounds."""
    rounds: list[dict[str, object]] = []
    comparisons = _comparisons_for(args.rounds * args.seconds)
    with ExitStack() as stack:
        old_code = stack.enter_context(_worktree(args.baseline_ref))
        sides = {
            "new": stack.enter_context(_running(_side("new", REPO, BENCH_DB), args, comparisons)),
            "old": stack.enter_context(_running(_side("old", old_code, f"{BENCH_DB}_baseline"), args, comparisons)),
        }
        for side in sides.values():
            _warm_up(side)
        for order in round_orders(args.rounds):
            measured = {name: _load(sides[name], args.seconds, _htmx_rating_loop) for name in order}
            rounds.append({"order": list(order), **measured})
    return {
        "mode": "side by side, closed-loop rating over HTMX",
        "sessions": args.sessions,
        "seconds_per_load": args.seconds,
        "rounds": args.rounds,
        "comparisons": comparisons,
        "gunicorn": _gunicorn_label(args),
        "new": {"code": _tree_label(), **_side_summary(rounds, "new")},
        "old": {"code": f"{args.baseline_ref} ({_commit(args.baseline_ref)})", **_side_summary(rounds, "old")},
        "judgements_per_s_new_to_old": ratio_summary(_per_round(rounds, "new"), _per_round(rounds, "old")),
        "errors": sum(int(load["errors"]) for measured in rounds for load in _loads_of(measured)),
        "targets": _side_by_side_targets(rounds),
        "per_round": rounds,
    }


def _long_run(args: argparse.Namespace) -> dict[str, object]:
    """One closed-loop HTMX rating load for `--duration` seconds, database CPU per request read every window."""
    comparisons = _comparisons_for(args.duration)
    report: dict[str, object] = {
        "mode": "one long closed-loop rating load over HTMX",
        "sessions": args.sessions,
        "duration_seconds": args.duration,
        "window_seconds": args.window,
        "comparisons": comparisons,
        "gunicorn": _gunicorn_label(args),
    }
    with ExitStack() as stack:
        trees = [("new", REPO, BENCH_DB, _tree_label())]
        if args.baseline_ref:
            old_code = stack.enter_context(_worktree(args.baseline_ref))
            label = f"{args.baseline_ref} ({_commit(args.baseline_ref)})"
            trees.append(("old", old_code, f"{BENCH_DB}_baseline", label))
        for name, code, database, label in trees:
            side = _side(name, code, database)
            with _running(side, args, comparisons):
                _warm_up(side)
                windows = _windowed_load(side, args.duration, args.window)
            report[name] = {"code": label, **window_trend(windows), "windows": windows}
    new = report["new"]
    last_to_first = new["database_cpu_last_to_first"]  # type: ignore[index]
    report["targets"] = {
        "database_cpu_per_request_last_to_first_window": {
            "value": last_to_first,
            "target": f"<= {FLAT_LIMIT}",
            "met": last_to_first <= FLAT_LIMIT,
        }
    }
    return report


def _comparisons_for(seconds: float) -> int:
    """Comparisons enough for `seconds` of rating on one side without running out."""
    return max(HTTP_COMPARISONS, int(seconds * COMPARISONS_PER_SECOND))


def _gunicorn_label(args: argparse.Namespace) -> str:
    return f"{args.workers} gthread workers × {args.threads} threads"


def _side(name: str, code: Path, database: str) -> Side:
    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    var_dir = Path(os.environ.get("PREFLOOP_VAR_DIR", "/tmp/prefloop-bench-annotators"))  # noqa: S108 - scratch
    return Side(name=name, code=code, database=database, server_url=server, var_dir=var_dir / name)


@contextmanager
def _running(side: Side, args: argparse.Namespace, comparisons: int) -> Iterator[Side]:
    """`side` migrated and seeded by its own code, served by its own gunicorn; stopped and dropped on the way out."""
    try:
        _admin(side.server_url, f"DROP DATABASE IF EXISTS {side.database} WITH (FORCE)")
        _admin(side.server_url, f"CREATE DATABASE {side.database}")
        env = side.env()
        _checked([sys.executable, "manage.py", "migrate", "-v0"], side, env)
        seed = [sys.executable, str(Path(__file__).resolve()), "--seed-only", "--sessions", str(args.sessions)]
        seeded = _checked([*seed, "--comparisons", str(comparisons)], side, {**env, CODE_VARIABLE: str(side.code)})
        side.cookies = json.loads(seeded)
        side.port = _free_port()
        command = [str(REPO / ".venv/bin/gunicorn"), "prefloop.wsgi", "-b", f"127.0.0.1:{side.port}", "-k", "gthread"]
        command += ["-w", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"]
        side.gunicorn = subprocess.Popen(
            [*command, "--chdir", str(side.code)],
            cwd=side.code,
            env=env,
        )
        _wait_for(side.port)
        yield side
    finally:
        if side.gunicorn:
            side.gunicorn.terminate()
            side.gunicorn.wait(timeout=30)
        _admin(side.server_url, f"DROP DATABASE IF EXISTS {side.database} WITH (FORCE)")


def _checked(command: list[str], side: Side, env: dict[str, str]) -> str:
    """Run `command` in the side's tree; its stdout, or an error carrying the end of its stderr."""
    done = subprocess.run(command, cwd=side.code, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:3])} failed on the {side.name} side:\n{done.stderr[-3000:]}")
    return done.stdout


@contextmanager
def _worktree(ref: str) -> Iterator[Path]:
    """`ref` checked out (detached) into a temporary git worktree, removed with its folder on the way out."""
    parent = Path(tempfile.mkdtemp(prefix="prefloop-baseline-"))
    tree = parent / "tree"
    try:
        _git("worktree", "add", "--detach", str(tree), ref)
        yield tree
    finally:
        if tree.exists():
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(parent, ignore_errors=True)


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _commit(ref: str) -> str:
    return _git("rev-parse", "--short", f"{ref}^{{commit}}")


def _tree_label() -> str:
    """Today's tree as measured: its commit, and whether files differ from it (read without taking git's locks)."""
    changed = _git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return f"working tree at {_commit('HEAD')}" + (" with uncommitted changes" if changed else "")


def _warm_up(side: Side) -> None:
    """Not measured: imports, templates, each gunicorn thread's database connection, prepared statements."""
    _load(side, 2, _baseline_loop)
    _load(side, 3, _htmx_rating_loop)


def _seed_only(args: argparse.Namespace) -> list[str]:
    """The seeding step of `_running`, in a process of its own whose models come from the side's tree."""
    code = Path(os.environ.get(CODE_VARIABLE, str(REPO))).resolve()
    # Only the side's tree: today's modules (this script's folder and repository) must not answer its imports.
    here = {str(REPO), str(Path(__file__).resolve().parent)}
    sys.path[:] = [str(code), *(entry for entry in sys.path if entry not in here)]
    import django

    django.setup()
    return _seed_http(args.sessions, args.comparisons)


def round_orders(rounds: int) -> list[tuple[str, str]]:
    """Which side runs first in each round: new first, then old first, and so on (new, old; old, new; …), so that
    a drift of the machine over the run (another job starting, tables growing) weighs on both sides alike instead
    of always on the side measured second."""
    return [("new", "old") if index % 2 == 0 else ("old", "new") for index in range(rounds)]


def median(values: list[float]) -> float:
    """The median (bench/statistics.py shadows the stdlib module when this file runs as a script)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def ratio_summary(new: list[float], old: list[float]) -> dict[str, object]:
    """new / old for each round (its two loads ran next to each other), with their median, lowest and highest,
    and the ratio of the two sides' medians."""
    if len(new) != len(old) or not new:
        raise ValueError(f"one figure per round and side is needed, not {len(new)} new and {len(old)} old")
    ratios = [round(a / b, 3) if b else float("inf") for a, b in zip(new, old, strict=True)]
    return {
        "per_round": ratios,
        "median": round(median(ratios), 3),
        "lowest": min(ratios),
        "highest": max(ratios),
        "ratio_of_medians": round(median(new) / median(old), 3) if median(old) else float("inf"),
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ys over xs (0 for fewer than two distinct xs)."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} xs against {len(ys)} ys")
    mean_x, mean_y = sum(xs) / max(len(xs), 1), sum(ys) / max(len(ys), 1)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if not spread:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def window_trend(windows: list[dict[str, float]]) -> dict[str, object]:
    """How the database's CPU per request moved over a long run: first and last window, their ratio, and the slope
    of a straight line through every window (ms per request per minute, and as a share of the first window's
    figure per 10 minutes)."""
    if not windows:
        raise ValueError("no window was measured")
    minutes = [window["ends_at_s"] / 60 for window in windows]
    cpu = [window["database_cpu_ms_per_request"] for window in windows]
    first, last = cpu[0], cpu[-1]
    per_minute = slope(minutes, cpu)
    return {
        "database_cpu_ms_per_request_first": first,
        "database_cpu_ms_per_request_last": last,
        "database_cpu_last_to_first": round(last / first, 3) if first else float("inf"),
        "database_cpu_slope_ms_per_request_per_minute": round(per_minute, 4),
        "database_cpu_slope_share_of_first_per_10_minutes": round(10 * per_minute / first, 3) if first else None,
        "judgements": sum(int(window["judgements"]) for window in windows),
    }


def _per_round(rounds: list[dict[str, object]], name: str) -> list[float]:
    return [float(measured[name]["judgements_per_s"]) for measured in rounds]  # type: ignore[index]


def _loads_of(measured: dict[str, object]) -> list[dict[str, object]]:
    return [measured[name] for name in ("new", "old")]  # type: ignore[misc]


def _side_summary(rounds: list[dict[str, object]], name: str) -> dict[str, object]:
    loads = [measured[name] for measured in rounds]

    def middle(key: str) -> float:
        return round(median([float(load[key]) for load in loads]), 1)  # type: ignore[index]

    postgres = [float(load["cpu_ms_per_request"]["postgres"]) for load in loads]  # type: ignore[index]
    return {
        "judgements_per_s": _per_round(rounds, name),
        "judgements_per_s_median": middle("judgements_per_s"),
        "p50_ms_median": middle("p50_ms"),
        "p99_ms_median": middle("p99_ms"),
        "postgres_cpu_ms_per_request_median": round(median(postgres), 2),
    }


def _side_by_side_targets(rounds: list[dict[str, object]]) -> dict[str, object]:
    ratio = ratio_summary(_per_round(rounds, "new"), _per_round(rounds, "old"))["median"]
    return {
        "judgements_per_s_new_to_old": {"value": ratio, "target": f">= {RATIO_TARGET}", "met": ratio >= RATIO_TARGET}  # type: ignore[operator]
    }


def _requests_ratio(load: dict[str, float], baseline: dict[str, float]) -> float:
    return round(load["requests_per_s"] / baseline["requests_per_s"], 3)


def _targets(
    baseline: dict[str, float],
    rating: dict[str, float],
    htmx: dict[str, float],
    paced: dict[str, float],
    claims: dict[str, object],
    queries: dict[str, float],
    table: dict[str, object],
    *,
    sessions: int,
) -> dict[str, object]:
    """Each target of the annotator benchmark with the measured value and whether it is met. The throughput
    target is read strictly: rating cycles (judgements) per second against the baseline's requests per second,
    for the faster of the two ways a page rates (plain form or HTMX). The human-pace target is set for 64
    sessions: the entry names the sessions it was measured with."""
    best = max((rating, htmx), key=lambda load: load["judgements_per_s"])
    cycle_ratio = round(best["judgements_per_s"] / baseline["requests_per_s"], 3)
    claim_ratio = float(claims["p50_ratio_large_to_small"])  # type: ignore[arg-type]
    statements = queries["statements"]
    hot = float(table["hot_ratio"])  # type: ignore[arg-type]
    human = paced["p99_ms"]
    return {
        "cycles_to_baseline_requests": {"value": cycle_ratio, "target": ">= 0.4", "met": cycle_ratio >= 0.4},
        "rating_p99_ms": {"value": best["p99_ms"], "target": "< 100", "met": best["p99_ms"] < 100},
        "human_pace_p99_ms": {
            "value": human,
            "target": f"< {HUMAN_PACE_P99_MS} with 64 sessions",
            "sessions": sessions,
            "met": human < HUMAN_PACE_P99_MS,
        },
        "claim_p50_large_to_small": {"value": claim_ratio, "target": "<= 1.5", "met": claim_ratio <= 1.5},
        "queries_per_cycle": {"value": statements, "target": "<= 12", "met": statements <= 12},
        "comparison_hot_update_ratio": {"value": hot, "target": ">= 0.8", "met": hot >= 0.8},
    }


def _comparison_table(side: Side, *, settle: bool = True) -> dict[str, object]:
    """The comparison table's counters in pg_stat_user_tables, read after the server's backends have reported
    theirs (a backend reports at most once a second, when idle; `settle=False` reads them as they stand, during a
    load), with its storage parameters."""
    if settle:
        time.sleep(2)
    with _connect(side.url) as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            """SELECT s.n_tup_upd, s.n_tup_hot_upd, s.n_dead_tup, s.n_live_tup, s.autovacuum_count, c.reloptions
               FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
               WHERE s.relname = 'evaluator_comparison'"""
        ).fetchone()
    updates, hot, dead, live, autovacuums, options = row
    return {
        "n_tup_upd": updates,
        "n_tup_hot_upd": hot,
        "n_dead_tup": dead,
        "n_live_tup": live,
        "autovacuum_count": autovacuums,
        "options": options,
    }


def _comparison_table_report(before: dict[str, object], after: dict[str, object]) -> dict[str, object]:
    """What the rating loads did to the comparison table: their updates, the share made in place (HOT), and the
    dead row versions left at the end (autovacuum may have removed some meanwhile)."""
    updates = int(after["n_tup_upd"]) - int(before["n_tup_upd"])  # type: ignore[call-overload]
    hot = int(after["n_tup_hot_upd"]) - int(before["n_tup_hot_upd"])  # type: ignore[call-overload]
    return {
        "n_tup_upd": updates,
        "n_tup_hot_upd": hot,
        "hot_ratio": round(hot / updates, 3) if updates else 0.0,
        "n_dead_tup": after["n_dead_tup"],
        "n_live_tup": after["n_live_tup"],
        "storage_parameters": after["options"],
    }


def _queries_per_cycle() -> dict[str, float]:
    """Statements one HTMX rating cycle sends to the database, over CYCLE_SAMPLES cycles of a fresh annotator in
    the HTTP campaign, through Django's test client in this process (the same views and middleware as gunicorn),
    with sessions read from the cache as deployed with CACHE_URL (without a cache, one more SELECT a request)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings

    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cached_db"):
        (user,) = _seed_users("counted", 1)
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        page = client.get("/rate/").content.decode()
        statements = control = 0
        for _ in range(CYCLE_SAMPLES):
            action = TOKEN.search(page)
            if action is None:
                raise RuntimeError("nothing left to rate while counting queries")
            form = {name: "left" for name in set(RADIO.findall(page))}
            with CaptureQueriesContext(connection) as queries:
                response = client.post(action.group(1), form, HTTP_HX_REQUEST="true")
            if response.status_code != 200:
                raise RuntimeError(f"HTMX POST {action.group(1)} → {response.status_code}")
            page = response.content.decode()
            sent = [query["sql"] for query in queries.captured_queries]
            transaction_control = sum(sql.split()[0] in ("BEGIN", "COMMIT") for sql in sent)
            control += transaction_control
            statements += len(sent) - transaction_control
        return {
            "cycles": CYCLE_SAMPLES,
            "statements": round(statements / CYCLE_SAMPLES, 2),
            "begin_commit": round(control / CYCLE_SAMPLES, 2),
        }


def _admin(server: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(sql)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def _seed_users(prefix: str, count: int) -> list:
    from django.contrib.auth import get_user_model

    from evaluator.services.accounts import role_groups_ensure

    group = role_groups_ensure()["annotator"]
    unusable = "!"  # no password: sessions are written directly
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"{prefix}{i}", password=unusable) for i in range(count)
    )
    group.user_set.add(*users)
    return users


def _seed_http(sessions: int, comparisons: int) -> list[str]:
    """Annotators with a logged-in session each (session cookie values), and a campaign to rate."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    # The backend a password login would record: the first that reads session users (each tree's own settings).
    backend = next(path for path in settings.AUTHENTICATION_BACKENDS if not path.startswith("axes."))
    cookies = []
    for user in _seed_users("rater", sessions):
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = backend
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        cookies.append(store.session_key)
    _seed_comparisons("HTTP load", comparisons, overlap=3)
    return cookies


def _seed_comparisons(campaign_name: str, count: int, *, overlap: int, campaign_id: int | None = None) -> int:
    """`count` comparisons in one campaign: 1 prompt, 2 variants, candidates paired all-against-all (SQL)."""
    from django.db import connection

    from evaluator.models import Campaign, ModelVariant, Prompt

    side = int(count**0.5) + 1
    campaign = Campaign.objects.get(pk=campaign_id) if campaign_id else _campaign_served(campaign_name, overlap)
    batch = f"{count}-{ModelVariant.objects.count()}"  # unique names, however often a campaign grows
    first = ModelVariant.objects.create(name=f"{campaign_name} a {batch}", base_model="tiny")
    second = ModelVariant.objects.create(name=f"{campaign_name} b {batch}", base_model="tiny")
    prompt = Prompt.objects.create(campaign=campaign, external_id=f"p{batch}", text="Which is better?")
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO evaluator_candidate (prompt_id, variant_id, sample_index, text, generation_settings, seed,
                   prompt_tokens, completion_tokens, latency_ms, retrieved, created_at)
               SELECT %s, v, i, 'Answer ' || i || ' of ' || v, '{}', 1, 5, 7, 12, '[]', now()
               FROM generate_series(0, %s - 1) i, unnest(ARRAY[%s, %s]) v""",
            [prompt.pk, side, first.pk, second.pk],
        )
        cursor.execute(
            """INSERT INTO evaluator_comparison (campaign_id, prompt_id, candidate_a_id, candidate_b_id, variant_a_id,
                   variant_b_id, created_at, live_assignments, judgement_count, vote_margin, rank_key)
               SELECT %s, %s, a.id, b.id, %s, %s, now(), 0, 0, 0, random()
               FROM evaluator_candidate a JOIN evaluator_candidate b
                 ON a.prompt_id = b.prompt_id AND a.variant_id = %s AND b.variant_id = %s
               WHERE a.prompt_id = %s LIMIT %s""",
            [campaign.pk, prompt.pk, first.pk, second.pk, first.pk, second.pk, prompt.pk, count],
        )
        cursor.execute("ANALYZE evaluator_comparison")
        cursor.execute("ANALYZE evaluator_assignment")
    return campaign.pk


def _campaign_served(name: str, overlap: int):
    """A campaign every annotator is served: an active one whose members are the annotator group, or, on versions
    from before campaign states and members (a baseline commit), any campaign."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    from evaluator.models import Campaign

    if not any(field.name == "state" for field in Campaign._meta.get_fields()):
        return Campaign.objects.create(name=name, overlap=overlap)
    campaign = Campaign.objects.create(name=name, overlap=overlap, state="active")
    member = apps.get_model("evaluator", "CampaignMember")
    member.objects.create(campaign=campaign, group=Group.objects.get_or_create(name="annotator")[0])
    return campaign


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:  # gone meanwhile
        return []


def _database_backends(side: Side) -> list[int]:
    """The client backends connected to the side's database (autovacuum workers and this bench's own left out)."""
    with _connect(side.url) as connection:
        rows = connection.execute(
            """SELECT pid FROM pg_stat_activity
               WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()""",
            [side.database],
        ).fetchall()
    return [pid for (pid,) in rows]


def _connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process (all its threads) so far, from /proc; gone processes left out."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (proc(5))
    return seconds


def _cpu_spent(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU seconds spent between two readings; a process started since the first counts from its start."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in now.items())


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class _CpuMeter:
    """CPU seconds spent since the previous reading by the load generator (this process), the side's gunicorn and
    its database backends, and the machine's busy share: client, server and database share the machine's cores."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.last = self._now()

    def _now(self) -> dict[str, object]:
        return {
            "client": time.process_time(),
            "gunicorn": _cpu_seconds(self.side.servers()),
            # Persistent connections (CONN_MAX_AGE): the same backends serve the load; those opened since the
            # previous reading (a thread's first request) are counted from their start.
            "postgres": _cpu_seconds(_database_backends(self.side)),
            "machine": _machine_busy(),
        }

    def read(self) -> dict[str, float]:
        """Seconds spent since the previous reading (the machine's as a busy share of its ticks)."""
        now, last = self._now(), self.last
        self.last = now
        busy, ticks = (after - before for after, before in zip(now["machine"], last["machine"], strict=True))  # type: ignore[call-overload]
        return {
            "client": float(now["client"]) - float(last["client"]),  # type: ignore[arg-type]
            "gunicorn": _cpu_spent(last["gunicorn"], now["gunicorn"]),  # type: ignore[arg-type]
            "postgres": _cpu_spent(last["postgres"], now["postgres"]),  # type: ignore[arg-type]
            "machine_busy_share": busy / max(ticks, 1),
        }


Loop = Callable[..., int]


class _SessionLoad:
    """One thread a session, each with one keep-alive connection and one signed-in annotator, running `loop` until
    the deadline; what they measured (latencies, judgements, errors) readable while they run."""

    def __init__(self, side: Side, seconds: float, loop: Loop) -> None:
        self.port, self.cookies, self.loop = side.port, side.cookies, loop
        self.latencies: list[list[float]] = [[] for _ in side.cookies]
        self.judged = [0] * len(side.cookies)
        self.errors: list[str] = []
        self.seconds = seconds
        self.deadline = 0.0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(len(side.cookies))]

    def start(self) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + self.seconds
        for thread in self.threads:
            thread.start()

    def join(self) -> float:
        """Seconds the load ran, once every session stopped."""
        for thread in self.threads:
            thread.join(timeout=self.seconds + 60)
        return time.monotonic() - self.started

    def marks(self) -> list[int]:
        """Where each session's latencies stand now: `latencies_since` reads those recorded after."""
        return [len(latencies) for latencies in self.latencies]

    def latencies_since(self, marks: list[int]) -> list[float]:
        return sorted(
            value for mark, latencies in zip(marks, self.latencies, strict=True) for value in latencies[mark:]
        )

    def _run(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        jar = {"sessionid": self.cookies[index]}
        # What a loop carries from one round to the next (the HTMX loop's next pair), and the load's deadline.
        state: dict[str, object] = {"deadline": self.deadline}
        try:
            while time.monotonic() < self.deadline:
                self.judged[index] += self.loop(connection, jar, self.latencies[index], state)
        except Exception as error:
            self.errors.append(repr(error))
        finally:
            connection.close()


def _load(side: Side, seconds: float, loop: Loop) -> dict[str, object]:
    """`loop` run by every session of `side` for `seconds`: throughput, latency, CPU per request, errors."""
    load = _SessionLoad(side, seconds, loop)
    meter = _CpuMeter(side)
    load.start()
    elapsed = load.join()
    cpu = meter.read()
    flat = load.latencies_since([0] * len(load.latencies))
    per_request = 1000 / max(len(flat), 1)
    return {
        "requests": len(flat),
        "requests_per_s": round(len(flat) / elapsed, 1),
        "judgements_per_s": round(sum(load.judged) / elapsed, 1),
        "p50_ms": round(1000 * _quantile(flat, 0.5), 1),
        "p99_ms": round(1000 * _quantile(flat, 0.99), 1),
        "cpu_ms_per_request": {name: round(cpu[name] * per_request, 2) for name in ("client", "gunicorn", "postgres")},
        "client_cpu_share_of_machine": round(cpu["client"] / (elapsed * (os.cpu_count() or 1)), 3),
        "machine_busy_share": round(cpu["machine_busy_share"], 3),
        "errors": len(load.errors),
        "first_error": load.errors[0] if load.errors else None,
    }


def _windowed_load(side: Side, seconds: float, window: float) -> list[dict[str, float]]:
    """The closed-loop HTMX rating load for `seconds`, read every `window` seconds while it runs: per window, the
    database backends' and gunicorn's CPU per request, judgements/s, p99, and the comparison table's dead rows,
    HOT share of its updates and autovacuums."""
    load = _SessionLoad(side, seconds, _htmx_rating_loop)
    meter = _CpuMeter(side)
    table = _comparison_table(side, settle=False)
    vacuuming = not _autovacuum_on(side)
    marks, judged = load.marks(), 0
    load.start()
    windows = []
    ends_at = 0.0
    while ends_at < seconds:
        ends_at = min(ends_at + window, seconds)
        time.sleep(max(0.0, load.started + ends_at - time.monotonic()))
        cpu, now = meter.read(), _comparison_table(side, settle=False)
        latencies, marks = load.latencies_since(marks), load.marks()
        judgements, judged = sum(load.judged) - judged, sum(load.judged)
        length = ends_at - (windows[-1]["ends_at_s"] if windows else 0.0)
        updates = int(now["n_tup_upd"]) - int(table["n_tup_upd"])  # type: ignore[call-overload]
        hot = int(now["n_tup_hot_upd"]) - int(table["n_tup_hot_upd"])  # type: ignore[call-overload]
        per_request = 1000 / max(len(latencies), 1)
        windows.append(
            {
                "ends_at_s": round(ends_at, 1),
                "requests": len(latencies),
                "judgements": judgements,
                "judgements_per_s": round(judgements / length, 1),
                "p99_ms": round(1000 * _quantile(latencies, 0.99), 1),
                "database_cpu_ms_per_request": round(cpu["postgres"] * per_request, 3),
                "gunicorn_cpu_ms_per_request": round(cpu["gunicorn"] * per_request, 3),
                "machine_busy_share": round(cpu["machine_busy_share"], 3),
                "n_dead_tup": now["n_dead_tup"],
                "hot_ratio": round(hot / updates, 3) if updates else 0.0,
                "autovacuums": int(now["autovacuum_count"]) - int(table["autovacuum_count"]),  # type: ignore[call-overload]
                "bench_vacuum_s": _vacuum_tables(side) if vacuuming else 0.0,
            }
        )
        table = now
    load.join()
    if load.errors:
        raise RuntimeError(f"{len(load.errors)} sessions failed during the long run; the first: {load.errors[0]}")
    return windows  # type: ignore[return-value]


def _autovacuum_on(side: Side) -> bool:
    with _connect(side.url) as connection:
        return connection.execute("SHOW autovacuum").fetchone()[0] == "on"


# The tables the rating loop writes on every judgement (migration 0016 gives them their autovacuum settings).
RATING_TABLES = ("evaluator_comparison", "evaluator_assignment", "evaluator_participation")


def _vacuum_tables(side: Side) -> float:
    """VACUUM (ANALYZE) of the rating loop's tables, standing in for autovacuum on a server that has it turned off
    (this project's CI machines): without it dead row versions and index entries pile up for the whole run, as no
    deployment would let them. Its CPU is not counted, like an autovacuum worker's. The seconds it took."""
    started = time.monotonic()
    with _connect(side.url) as connection:
        # A baseline commit may predate a table.
        tables = [name for name in RATING_TABLES if connection.execute("SELECT to_regclass(%s)", [name]).fetchone()[0]]
        connection.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
    return round(time.monotonic() - started, 2)


def _request(
    connection, jar: dict[str, str], latencies: list[float], method: str, path: str, body: str = "", htmx=False
):
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()), "Host": "127.0.0.1"}
    if htmx:
        headers["HX-Request"] = "true"
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Referer"] = "http://127.0.0.1/rate/"
    started = time.perf_counter()
    connection.request(method, path, body=body or None, headers=headers)
    response = connection.getresponse()
    text = response.read().decode()
    latencies.append(time.perf_counter() - started)
    for header, value in response.getheaders():
        if header.lower() == "set-cookie":
            name, _, rest = value.partition("=")
            jar[name] = rest.split(";", 1)[0]
    return response.status, text


def _baseline_loop(connection, jar, latencies, state) -> int:
    status, body = _request(connection, jar, latencies, "GET", "/healthz")
    if status != 200 or body != "ok":
        raise RuntimeError(f"GET /healthz → {status} {body[:80]!r}")
    return 0


def _signed_in_loop(connection, jar, latencies, state) -> int:
    """The cheapest answer a signed-in annotator can get: session, user and roles read, a redirect to /rate/."""
    status, _ = _request(connection, jar, latencies, "GET", "/")
    if status != 302:
        raise RuntimeError(f"GET / → {status}")
    return 0


def _rating_loop(connection, jar, latencies, state) -> int:
    """The page without JavaScript: GET the pair, POST the form, follow the redirect back to the next pair."""
    page = _next_pair(connection, jar, latencies)
    action = TOKEN.search(page)
    if action is None:  # nothing left to rate
        time.sleep(0.05)
        return 0
    status, _ = _request(connection, jar, latencies, "POST", action.group(1), _filled_form(page))
    if status != 302:
        raise RuntimeError(f"POST {action.group(1)} → {status}")
    return 1


def _htmx_rating_loop(connection, jar, latencies, state) -> int:
    """What the page's HTMX does in a browser: each POST stores the judgement and answers with the next pair."""
    page = state.pop("page", None) or _next_pair(connection, jar, latencies)
    action = TOKEN.search(page)
    if action is None:  # nothing left to rate
        time.sleep(0.05)
        return 0
    status, state["page"] = _request(connection, jar, latencies, "POST", action.group(1), _filled_form(page), htmx=True)
    if status != 200:
        raise RuntimeError(f"HTMX POST {action.group(1)} → {status}")
    return 1


def _human_paced(loop, think: float):
    """`loop` with an annotator's reading and choosing time after each round: `think` seconds on average
    (uniform over ±50 %), sessions starting at random points of the first pause so they do not arrive together."""

    def paced(connection, jar, latencies, state) -> int:
        if "started" not in state:
            state["started"] = True
            _pause(random.uniform(0, think), state)
        judged = loop(connection, jar, latencies, state)
        _pause(random.uniform(0.5, 1.5) * think, state)
        # The server closes a keep-alive connection idle for longer than gunicorn's keepalive (2 s), as it would a
        # browser's: the next request opens a new one (http.client connects again after close()).
        connection.close()
        return judged

    return paced


def _pause(seconds: float, state) -> None:
    time.sleep(max(0.0, min(seconds, state["deadline"] - time.monotonic())))


def _next_pair(connection, jar, latencies) -> str:
    status, page = _request(connection, jar, latencies, "GET", "/rate/")
    if status != 200:
        raise RuntimeError(f"GET /rate/ → {status}")
    return page


def _filled_form(page: str) -> str:
    form = {name: "left" for name in set(RADIO.findall(page))}
    form["csrfmiddlewaretoken"] = CSRF.search(page).group(1)
    return urlencode(form)


def _claim_latency(small: int, large: int) -> dict[str, object]:
    from django.db import connection

    from evaluator.models import Campaign
    from evaluator.services.rating import assignment_next

    with connection.cursor() as cursor:  # the HTTP campaign out of the way: one campaign, as the sizes differ
        cursor.execute("TRUNCATE evaluator_campaign CASCADE")
    users = _seed_users("claimer", CLAIM_SAMPLES)
    campaign_id = _seed_comparisons("Claims", small, overlap=3)
    result: dict[str, object] = {"samples": CLAIM_SAMPLES}
    for label, size in (("small", small), ("large", large)):
        if size > Campaign.objects.get(pk=campaign_id).comparisons.count():
            _seed_comparisons("Claims", size - small, overlap=3, campaign_id=campaign_id)
        with connection.cursor() as cursor:  # the same starting state for both sizes
            cursor.execute("DELETE FROM evaluator_assignment")
            cursor.execute(
                "UPDATE evaluator_comparison SET live_assignments = 0, claimable = true WHERE live_assignments > 0"
            )
        timings = []
        for user in users:
            started = time.perf_counter()
            claimed = assignment_next(annotator=user)
            timings.append(time.perf_counter() - started)
            if claimed is None:
                raise RuntimeError("a claim found nothing")
        timings.sort()
        result[label] = {
            "comparisons": Campaign.objects.get(pk=campaign_id).comparisons.count(),
            "p50_ms": round(1000 * _quantile(timings, 0.5), 2),
            "p99_ms": round(1000 * _quantile(timings, 0.99), 2),
        }
    result["p50_ratio_large_to_small"] = round(result["large"]["p50_ms"] / result["small"]["p50_ms"], 2)
    return result


def _quantile(values: list[float], share: float) -> float:
    """The nearest-rank quantile of sorted `values` (bench/statistics.py shadows the stdlib module here)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(share * len(values)))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--think", type=float, default=5.0, help="mean seconds an annotator takes per pair")
    parser.add_argument("--baseline-ref", help="a commit to measure today's tree against, side by side")
    parser.add_argument("--rounds", type=int, default=6, help="side-by-side rounds (each side once a round)")
    parser.add_argument("--duration", type=float, help="seconds of one long rating load, read every --window")
    parser.add_argument("--window", type=float, default=30.0, help="seconds between readings of the long load")
    # The seeding step, run by the bench itself in a process whose models come from one side's tree.
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--comparisons", type=int, default=HTTP_COMPARISONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.duration is not None and (args.duration <= 0 or not 0 < args.window <= args.duration)):
        parser.error("--rounds must be at least 1, --duration above 0 and --window between 0 and --duration")
    return args


if __name__ == "__main__":
    print(json.dumps(main(parse_args()), indent=2))
