"""Prefloop's streamed judgement exports against PostgreSQL's own COPY of the same columns, in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/export.py [--rows 1000000]

DATABASE_URL names the server (any database on it): the script creates a throwaway database `prefloop_bench`
there, migrates it, fills two campaigns of `--rows / 10` and `--rows` judgement × criterion rows with
generate_series (three annotators, six criteria, ~300-character answers), and drops it at the end (--keep keeps
it for another run). For each size it times Prefloop's CSV and Parquet exports into a sink that only counts bytes
and `COPY (…same columns…) TO STDOUT (FORMAT csv)` read through psycopg, and samples the process's resident
memory during each export. It prints one JSON report: rows/s, the ratio Prefloop / COPY (target ≥ 0.5) and the
peak RSS growth of each export (target < 300 MB, and flat from the small to the large campaign).

Timings are wall-clock and noisy on a shared machine; run it twice and compare.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCH_DB = "prefloop_bench"
CRITERIA = ["factual_accuracy", "relevance", "safety", "alignment", "formatting", "overall"]
ANNOTATORS = 3

COPY_SQL = """
COPY (
    SELECT cc.judgement_id, ca.name, p.external_id, p.text, cc.criterion, va.name, vb.name, a.text, b.text,
           cc.outcome,
           CASE cc.outcome WHEN 'a' THEN va.name WHEN 'b' THEN vb.name ELSE 'tie' END,
           CASE WHEN asg.left_is_a THEN 'a' ELSE 'b' END,
           u.username, j.annotator_id, j.time_on_task_ms, j.created_at, c.gold_outcome IS NOT NULL
    FROM evaluator_criterionchoice cc
    JOIN evaluator_judgement j ON j.id = cc.judgement_id
    JOIN evaluator_comparison c ON c.id = j.comparison_id
    JOIN evaluator_campaign ca ON ca.id = c.campaign_id
    JOIN evaluator_prompt p ON p.id = c.prompt_id
    JOIN evaluator_modelvariant va ON va.id = c.variant_a_id
    JOIN evaluator_modelvariant vb ON vb.id = c.variant_b_id
    JOIN evaluator_candidate a ON a.id = c.candidate_a_id
    JOIN evaluator_candidate b ON b.id = c.candidate_b_id
    JOIN evaluator_assignment asg ON asg.id = j.assignment_id
    JOIN auth_user u ON u.id = j.annotator_id
    WHERE c.campaign_id = %s
    ORDER BY cc.id
) TO STDOUT (FORMAT csv, HEADER)
"""


def server_url(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(server_url(url, "postgres"), autocommit=True) as connection:
        connection.execute(statement)


def fill(campaign_name: str, rows: int) -> int:
    """A campaign of two variants with `rows` judgement × criterion rows; returns its id."""
    from django.db import connection

    from evaluator.models import Campaign, ModelVariant

    campaign = Campaign.objects.create(name=campaign_name, overlap=ANNOTATORS)
    base = ModelVariant.objects.get_or_create(name="base", defaults={"base_model": "tiny"})[0]
    tuned = ModelVariant.objects.get_or_create(name="tuned", defaults={"base_model": "tiny"})[0]
    comparisons = max(1, rows // (len(CRITERIA) * ANNOTATORS))
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM auth_user ORDER BY id")
        users = [row[0] for row in cursor.fetchall()]
        statements = [
            """INSERT INTO evaluator_prompt (campaign_id, external_id, text, reference, context, created_at)
               SELECT %(c)s, 'p' || g, 'Question ' || g || ': what does a museum conservator do, and why?', '', '',
                      now() FROM generate_series(1, %(n)s) g""",
            """INSERT INTO evaluator_candidate (prompt_id, variant_id, sample_index, text, generation_settings, seed,
                      prompt_tokens, completion_tokens, latency_ms, created_at)
               SELECT p.id, v.id, 0, repeat(md5(p.id::text || v.id::text), 9) || ' "quoted", and, commas',
                      '{}', 1, 20, 80, 100, now()
               FROM evaluator_prompt p CROSS JOIN (VALUES (%(a)s), (%(b)s)) v(id) WHERE p.campaign_id = %(c)s""",
            """INSERT INTO evaluator_comparison (campaign_id, prompt_id, candidate_a_id, candidate_b_id, variant_a_id,
                      variant_b_id, gold_outcome, created_at)
               SELECT %(c)s, p.id, a.id, b.id, %(a)s, %(b)s, CASE WHEN p.id %% 50 = 0 THEN 'a' END, now()
               FROM evaluator_prompt p
               JOIN evaluator_candidate a ON a.prompt_id = p.id AND a.variant_id = %(a)s
               JOIN evaluator_candidate b ON b.prompt_id = p.id AND b.variant_id = %(b)s
               WHERE p.campaign_id = %(c)s""",
            """INSERT INTO evaluator_assignment (token, comparison_id, annotator_id, left_is_a, created_at,
                      lease_expires_at, completed_at)
               SELECT gen_random_uuid(), c.id, u.id, (c.id + u.id) %% 2 = 0, now(), now(), now()
               FROM evaluator_comparison c CROSS JOIN unnest(%(users)s::int[]) u(id) WHERE c.campaign_id = %(c)s""",
            """INSERT INTO evaluator_judgement (assignment_id, comparison_id, annotator_id, rationale,
                      time_on_task_ms, created_at)
               SELECT s.id, s.comparison_id, s.annotator_id, '', 1000 + s.id %% 9000,
                      now() - make_interval(secs => s.id)
               FROM evaluator_assignment s JOIN evaluator_comparison c ON c.id = s.comparison_id
               WHERE c.campaign_id = %(c)s""",
            """INSERT INTO evaluator_criterionchoice (judgement_id, criterion, outcome)
               SELECT j.id, k.slug, (ARRAY['a', 'b', 'tie'])[1 + (j.id + k.n) %% 3]
               FROM evaluator_judgement j JOIN evaluator_comparison c ON c.id = j.comparison_id
               CROSS JOIN unnest(%(criteria)s::text[]) WITH ORDINALITY k(slug, n)
               WHERE c.campaign_id = %(c)s ORDER BY j.id, k.n""",
        ]
        params = {
            "c": campaign.pk,
            "n": comparisons,
            "a": base.pk,
            "b": tuned.pk,
            "users": users,
            "criteria": CRITERIA,
        }
        for statement in statements:
            cursor.execute(statement, params)
        cursor.execute("ANALYZE")
    return campaign.pk


class RssSampler:
    """Samples the resident set size every 5 ms in a thread; `peak` is the highest sample since start."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self) -> "RssSampler":
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def measure(run, rows: int) -> dict[str, float]:
    import gc

    gc.collect()
    before = RssSampler.rss()
    with RssSampler() as sampler:
        started = time.perf_counter()
        size = run()
        seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "bytes": size,
        "peak_rss_growth_mb": round((sampler.peak - before) / 2**20, 1),
    }


def prefloop_export(campaign_id: int, file_format: str) -> int:
    from evaluator.models import Campaign
    from evaluator.selectors.exports import judgements_export

    campaign = Campaign.objects.get(pk=campaign_id)
    return sum(len(chunk) for chunk in judgements_export(campaign=campaign, file_format=file_format))


def copy_export(campaign_id: int) -> int:
    from django.db import connection

    connection.ensure_connection()
    size = 0
    with connection.connection.cursor() as cursor, cursor.copy(COPY_SQL, (campaign_id,)) as copy:
        for block in copy:
            size += len(block)
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows of the large campaign (small: a tenth).")
    parser.add_argument("--keep", action="store_true", help="Keep (and reuse) the bench database.")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not url.startswith("postgres"):
        parser.error("DATABASE_URL must name a PostgreSQL server")
    reuse = args.keep and _exists(url)
    if not reuse:
        admin(url, f"DROP DATABASE IF EXISTS {BENCH_DB}")
        admin(url, f"CREATE DATABASE {BENCH_DB}")
    os.environ["DATABASE_URL"] = server_url(url, BENCH_DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from evaluator.models import Campaign, CriterionChoice

    try:
        started = time.perf_counter()
        if not reuse:
            call_command("migrate", verbosity=0)
            from django.contrib.auth import get_user_model

            for index in range(ANNOTATORS):
                get_user_model().objects.create_user(username=f"annotator{index}")
            fill("small", args.rows // 10)
            fill("large", args.rows)
        fill_seconds = time.perf_counter() - started
        report: dict[str, object] = {"fill_seconds": round(fill_seconds, 1), "sizes": {}}
        # One unmeasured pass first, so that imports and first-use allocations (pyarrow's pools) are not counted
        # as the export's memory.
        warm_up = Campaign.objects.order_by("pk").first()
        for file_format in ("csv", "parquet", "jsonl"):
            prefloop_export(warm_up.pk, file_format)
        copy_export(warm_up.pk)
        for campaign in Campaign.objects.order_by("pk"):
            rows = CriterionChoice.objects.filter(judgement__comparison__campaign=campaign).count()
            results = {
                "rows": rows,
                "copy_csv": measure(lambda c=campaign.pk: copy_export(c), rows),
                "prefloop_csv": measure(lambda c=campaign.pk: prefloop_export(c, "csv"), rows),
                "prefloop_parquet": measure(lambda c=campaign.pk: prefloop_export(c, "parquet"), rows),
                "prefloop_jsonl": measure(lambda c=campaign.pk: prefloop_export(c, "jsonl"), rows),
            }
            copy_rate = results["copy_csv"]["rows_per_s"]
            for name in ("prefloop_csv", "prefloop_parquet", "prefloop_jsonl"):
                results[name]["ratio_to_copy"] = round(results[name]["rows_per_s"] / copy_rate, 2)
            report["sizes"][campaign.name] = results
            print(json.dumps({campaign.name: results}), file=sys.stderr, flush=True)
        report["targets"] = {"ratio_to_copy": ">= 0.5", "peak_rss_growth_mb": "< 300, flat across sizes"}
        report["cpu_count"] = os.cpu_count()
        print(json.dumps(report, indent=2))
    finally:
        connection.close()
        if not args.keep:
            admin(url, f"DROP DATABASE IF EXISTS {BENCH_DB}")
    return 0


def _exists(url: str) -> bool:
    import psycopg

    with psycopg.connect(server_url(url, "postgres"), autocommit=True) as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone() is not None


if __name__ == "__main__":
    sys.exit(main())
