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
- signed-in floor: GET / as the annotator, which reads the session, the user and their roles (three queries)
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
p99 < 100 ms, claim p50 at the large size ≤ 1.5 × at the small one, ≤ 12 statements per rating cycle, and ≥ 80 %
of the comparison table's updates made in place (HOT). With closed-loop sessions the p99 is mostly
queueing: about sessions ÷ throughput once the server is saturated, so `--sessions 8` shows the service time.
Each load also reports the CPU seconds per request spent by the load generator (this process), by gunicorn and
by the bench database's PostgreSQL backends, and the machine's busy share: client, server and database share the
machine's cores, so a load the client itself slows is seen.
Timings are wall-clock on a shared machine: run twice, compare.
"""

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCH_DB = os.environ.get("PREFLOOP_BENCH_DB", "prefloop_bench_annotators")
HTTP_COMPARISONS = 20_000
CLAIM_SAMPLES = 300
CYCLE_SAMPLES = 20
TOKEN = re.compile(r'action="(/rate/[0-9a-f-]+/)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
RADIO = re.compile(r'type="radio" name="([a-z_]+)"')


def main(args: argparse.Namespace) -> dict[str, object]:
    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parts = urlsplit(server)
    bench_url = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
    _admin(server, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    _admin(server, f"CREATE DATABASE {BENCH_DB}")
    var_dir = Path(os.environ.get("PREFLOOP_VAR_DIR", "/tmp/prefloop-bench-annotators"))  # noqa: S108 - scratch
    # Database connections kept for the whole run: backends live as long as the loads, so their CPU is all counted.
    env = {**os.environ, "DATABASE_URL": bench_url, "PREFLOOP_VAR_DIR": str(var_dir), "DATABASE_CONN_MAX_AGE": "3600"}
    os.environ.update(DATABASE_URL=bench_url, PREFLOOP_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="prefloop.settings")
    gunicorn = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
        import django

        django.setup()
        cookies = _seed_http(args.sessions)
        port = _free_port()
        command = [str(REPO / ".venv/bin/gunicorn"), "prefloop.wsgi", "-b", f"127.0.0.1:{port}", "-k", "gthread"]
        gunicorn = subprocess.Popen(
            [*command, "-w", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
            cwd=REPO,
            env=env,
        )
        _wait_for(port)
        _load(port, cookies, 2, _baseline_loop)  # warm-up, not measured: imports, connections, templates
        servers = [gunicorn.pid, *_children(gunicorn.pid)]
        baseline = _load(port, cookies, args.seconds, _baseline_loop, servers)
        floor = _load(port, cookies, args.seconds, _signed_in_loop, servers)
        table_before = _comparison_table()
        rating = _load(port, cookies, args.seconds, _rating_loop, servers)
        htmx = _load(port, cookies, args.seconds, _htmx_rating_loop, servers)
        paced = _load(port, cookies, 2 * args.seconds, _human_paced(_htmx_rating_loop, args.think), servers)
        table = _comparison_table_report(table_before, _comparison_table())
        queries = _queries_per_cycle()
        claims = _claim_latency(args.small, args.large)
    finally:
        if gunicorn:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        _admin(server, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    return {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "gunicorn": f"{args.workers} gthread workers × {args.threads} threads",
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
        "targets": _targets(baseline, rating, htmx, claims, queries, table),
    }


def _requests_ratio(load: dict[str, float], baseline: dict[str, float]) -> float:
    return round(load["requests_per_s"] / baseline["requests_per_s"], 3)


def _targets(
    baseline: dict[str, float],
    rating: dict[str, float],
    htmx: dict[str, float],
    claims: dict[str, object],
    queries: dict[str, float],
    table: dict[str, object],
) -> dict[str, object]:
    """Each target of the annotator benchmark with the measured value and whether it is met. The throughput
    target is read strictly: rating cycles (judgements) per second against the baseline's requests per second,
    for the faster of the two ways a page rates (plain form or HTMX)."""
    best = max((rating, htmx), key=lambda load: load["judgements_per_s"])
    cycle_ratio = round(best["judgements_per_s"] / baseline["requests_per_s"], 3)
    claim_ratio = float(claims["p50_ratio_large_to_small"])  # type: ignore[arg-type]
    statements = queries["statements"]
    hot = float(table["hot_ratio"])  # type: ignore[arg-type]
    return {
        "cycles_to_baseline_requests": {"value": cycle_ratio, "target": ">= 0.4", "met": cycle_ratio >= 0.4},
        "rating_p99_ms": {"value": best["p99_ms"], "target": "< 100", "met": best["p99_ms"] < 100},
        "claim_p50_large_to_small": {"value": claim_ratio, "target": "<= 1.5", "met": claim_ratio <= 1.5},
        "queries_per_cycle": {"value": statements, "target": "<= 12", "met": statements <= 12},
        "comparison_hot_update_ratio": {"value": hot, "target": ">= 0.8", "met": hot >= 0.8},
    }


def _comparison_table() -> dict[str, object]:
    """The comparison table's counters in pg_stat_user_tables, read after the server's backends have reported
    theirs (a backend reports at most once a second, when idle), with its storage parameters."""
    time.sleep(2)
    with psycopg_connect() as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            """SELECT s.n_tup_upd, s.n_tup_hot_upd, s.n_dead_tup, s.n_live_tup, c.reloptions
               FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
               WHERE s.relname = 'evaluator_comparison'"""
        ).fetchone()
    updates, hot, dead, live, options = row
    return {"n_tup_upd": updates, "n_tup_hot_upd": hot, "n_dead_tup": dead, "n_live_tup": live, "options": options}


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


def _seed_http(sessions: int) -> list[str]:
    """Annotators with a logged-in session each (session cookie values), and a campaign to rate."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    cookies = []
    for user in _seed_users("rater", sessions):
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        cookies.append(store.session_key)
    _seed_comparisons("HTTP load", HTTP_COMPARISONS, overlap=3)
    return cookies


def _seed_comparisons(campaign_name: str, count: int, *, overlap: int, campaign_id: int | None = None) -> int:
    """`count` comparisons in one campaign: 1 prompt, 2 variants, candidates paired all-against-all (SQL)."""
    from django.contrib.auth.models import Group
    from django.db import connection

    from evaluator.models import Campaign, CampaignMember, CampaignState, ModelVariant, Prompt

    side = int(count**0.5) + 1
    if campaign_id is None:
        # Served to every annotator, as the claim serves only active campaigns to their members.
        campaign = Campaign.objects.create(name=campaign_name, overlap=overlap, state=CampaignState.ACTIVE)
        CampaignMember.objects.create(campaign=campaign, group=Group.objects.get_or_create(name="annotator")[0])
    else:
        campaign = Campaign.objects.get(pk=campaign_id)
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


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _database_backends() -> list[int]:
    with psycopg_connect() as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [BENCH_DB]
        ).fetchall()
    return [pid for (pid,) in rows]


def psycopg_connect():
    import psycopg

    return psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


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


def _cpu_spent(before: dict[int, float], pids: list[int]) -> float:
    """CPU seconds the processes spent since `before`; a process started since then counts from its start."""
    return sum(now - before.get(pid, 0.0) for pid, now in _cpu_seconds(pids).items())


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _load(port: int, cookies: list[str], seconds: float, loop, servers: list[int] | None = None) -> dict[str, float]:
    servers = servers or []
    backends = _database_backends()  # persistent connections (CONN_MAX_AGE): the same backends serve the load
    client_before = time.process_time()
    server_before, database_before = _cpu_seconds(servers), _cpu_seconds(backends)
    busy_before, ticks_before = _machine_busy()
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in cookies]
    judged = [0] * len(cookies)
    errors: list[str] = []

    def run(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        jar = {"sessionid": cookies[index]}
        # What a loop carries from one round to the next (the HTMX loop's next pair), and the load's deadline.
        state: dict[str, object] = {"deadline": deadline}
        try:
            while time.monotonic() < deadline:
                judged[index] += loop(connection, jar, latencies[index], state)
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cookies))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    client_cpu = time.process_time() - client_before
    server_cpu = _cpu_spent(server_before, servers)
    # Backends opened during the load (the first requests of each thread) are counted from their start.
    database_cpu = _cpu_spent(database_before, _database_backends())
    busy_after, ticks_after = _machine_busy()
    flat = sorted(value for per_thread in latencies for value in per_thread)
    per_request = 1000 / max(len(flat), 1)
    return {
        "requests": len(flat),
        "requests_per_s": round(len(flat) / elapsed, 1),
        "judgements_per_s": round(sum(judged) / elapsed, 1),
        "p50_ms": round(1000 * _quantile(flat, 0.5), 1),
        "p99_ms": round(1000 * _quantile(flat, 0.99), 1),
        "cpu_ms_per_request": {
            "client": round(client_cpu * per_request, 2),
            "gunicorn": round(server_cpu * per_request, 2),
            "postgres": round(database_cpu * per_request, 2),
        },
        "client_cpu_share_of_machine": round(client_cpu / (elapsed * os.cpu_count()), 3),
        "machine_busy_share": round((busy_after - busy_before) / max(ticks_after - ticks_before, 1), 3),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


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
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(main(parse_args()), indent=2))
