"""The campaign's "x% complete" on every pair page, without counting the campaign's rows on every page.

Counting a campaign's comparisons and judgements costs time in proportion to the campaign (a million comparisons:
tens of milliseconds), on the most frequent page of the app. The two counts are kept in Django's cache for
PROGRESS_SECONDS instead; a judgement stored through the engine adds itself to the cached count at once. With the
shared cache (CACHE_URL) every process sees that count; with the default per-process cache another process's page
may lag by the judgements of the last PROGRESS_SECONDS: fine for a progress line, which is all this is used for.
"""

from contextlib import suppress

from django.core.cache import cache

from evaluator.models import Campaign, Comparison, Judgement

PROGRESS_SECONDS = 30


def _keys(campaign: Campaign) -> tuple[str, str]:
    # The creation time in the key: a new campaign that reuses an id (SQLite after a rollback) starts afresh.
    stamp = f"{campaign.pk}:{campaign.created_at.timestamp() if campaign.created_at else 0}"
    return f"prefloop:progress:judged:{stamp}", f"prefloop:progress:wanted:{stamp}"


def campaign_percent_done(*, campaign: Campaign) -> int:
    """Share of the campaign's wanted judgements (comparisons × k) already given, 0–100, at most PROGRESS_SECONDS
    old. Counted from the rows, not the engine's ranking counters: imported judgements count too."""
    judged_key, wanted_key = _keys(campaign)
    counts = cache.get_many([judged_key, wanted_key])
    if len(counts) < 2:
        counts = {
            judged_key: Judgement.objects.filter(comparison__campaign=campaign).count(),
            wanted_key: Comparison.objects.filter(campaign=campaign).count() * campaign.overlap,
        }
        cache.set_many(counts, PROGRESS_SECONDS)
    wanted = counts[wanted_key]
    return min(100, round(100 * counts[judged_key] / wanted)) if wanted else 0


def campaign_judgement_counted(*, campaign: Campaign) -> None:
    """One more judgement in the campaign: the cached count follows at once (no-op when not cached)."""
    with suppress(ValueError):  # not cached: the next page counts afresh
        cache.incr(_keys(campaign)[0])
