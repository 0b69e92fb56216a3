"""The assignment engine on the SQLite fallback (the embedded default of `make demo`), under real threads.

The suite's database is PostgreSQL, so the engine runs in a child process of its own against a SQLite file: it
migrates the file, races the threads (``BEGIN IMMEDIATE`` serialises them; see evaluator/services/rating.py) and prints
the counts that the invariants are checked on here. The child alone:

    DATABASE_URL=sqlite:///var/race.sqlite3 python -m tests.evaluator.test_assignment_concurrency_sqlite
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANNOTATORS, COMPARISONS, OVERLAP = 12, 6, 3


def test_threads_on_the_sqlite_fallback_never_push_a_comparison_past_k_nor_store_a_judgement_twice(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'race.sqlite3'}", "PREFLOOP_VAR_DIR": str(tmp_path)}
    child = subprocess.run(
        [sys.executable, "-m", "tests.evaluator.test_assignment_concurrency_sqlite"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.splitlines()[-1])

    assert report["vendor"] == "sqlite"
    submitted = report["submitted"]
    assert len(submitted) == len(set(submitted)) == report["judgements"] == COMPARISONS * OVERLAP
    assert sorted(report["per_comparison"].values()) == [OVERLAP] * COMPARISONS
    assert report["assignments"] == COMPARISONS * OVERLAP
    assert report["annotator_twice"] == 0
    assert report["choices"] == report["judgements"] * report["slugs"]
    assert report["counters"] == [[OVERLAP, OVERLAP]] * COMPARISONS
    first, second = report["double_submit"]
    assert first == second and report["double_submit_judgements"] == 1


def main() -> None:
    """The child: migrate the SQLite file, race the threads, print the report as one JSON line."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count

    from evaluator.models import Assignment, Comparison, CriterionChoice, Judgement
    from evaluator.services.rating import assignment_next, judgement_submit
    from tests import factories
    from tests.evaluator.test_assignment_concurrency import all_sides, run_in_threads

    call_command("migrate", verbosity=0)
    campaign = factories.campaign(overlap=OVERLAP)
    comparisons = [factories.comparison(campaign) for _ in range(COMPARISONS)]
    # No passwords: hashing one costs more than the whole race, and the engine does not look at roles.
    users = get_user_model().objects
    annotators = users.bulk_create(get_user_model()(username=f"racer{i}") for i in range(ANNOTATORS))
    # The engine serves a campaign to its members: factories' campaigns have the annotator group as theirs.
    role = Group.objects.get_or_create(name="annotator")[0]
    role.user_set.add(*annotators)

    def claim_and_judge(annotator) -> list[int]:
        stored = []
        while (task := assignment_next(annotator=annotator)) is not None:
            choices = all_sides(campaign, "left")
            stored.append(judgement_submit(token=str(task.token), annotator=annotator, choices=choices).pk)
        return stored

    results = run_in_threads([lambda annotator=annotator: claim_and_judge(annotator) for annotator in annotators])
    report = {
        "vendor": connection.vendor,
        "submitted": [pk for stored in results for pk in stored],
        "judgements": Judgement.objects.count(),
        "per_comparison": dict(Judgement.objects.values_list("comparison").annotate(n=Count("pk"))),
        "assignments": Assignment.objects.count(),
        "annotator_twice": Assignment.objects.values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count(),
        "choices": CriterionChoice.objects.count(),
        "slugs": len(campaign.criterion_slugs),
        "counters": [
            list(Comparison.objects.values_list("live_assignments", "judgement_count").get(pk=comparison.pk))
            for comparison in comparisons
        ],
    }

    # One token submitted from two threads at once: one judgement, returned to both.
    late = factories.campaign(overlap=1)
    factories.comparison(late)
    annotator = users.create(username="double")
    role.user_set.add(annotator)
    task = assignment_next(annotator=annotator)
    report["double_submit"] = run_in_threads(
        [
            lambda side=side: (
                judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(late, side)).pk
            )
            for side in ("left", "right")
        ]
    )
    report["double_submit_judgements"] = Judgement.objects.filter(assignment=task).count()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
