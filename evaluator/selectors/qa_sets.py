"""Reads of Q&A sets: the list with review counts, a page of pairs to review, and the approved pairs as SFT data."""

import json

from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet

from evaluator.models import QAPair, QASet

PAIRS_PER_PAGE = 25
# What the review page's status filter offers; "all" is every pair.
STATUS_FILTERS = ("pending", "approved", "rejected", "all")


def qa_sets_with_counts() -> QuerySet[QASet]:
    """Every set with its collection, variant and creator, and its pairs counted by review status (one query)."""
    return QASet.objects.select_related("collection", "variant", "created_by").annotate(
        approved_count=Count("pairs", filter=Q(pairs__status=QAPair.Status.APPROVED)),
        pending_count=Count("pairs", filter=Q(pairs__status=QAPair.Status.PENDING)),
    )


def qa_pairs_page(*, qa_set: QASet, status: str, page_number: int | str | None) -> Page:
    """One page of the set's pairs in the order they were written, those of `status` only (a STATUS_FILTERS value;
    "all": every pair), each with its reviewer."""
    pairs = qa_set.pairs.select_related("reviewed_by").order_by("pk")
    if status != "all":
        pairs = pairs.filter(status=status)
    page = Paginator(pairs, PAIRS_PER_PAGE).get_page(page_number)
    page.object_list = list(page.object_list)
    return page


def qa_set_status_counts(*, qa_set: QASet) -> dict[str, int]:
    """How many of the set's pairs are pending, approved and rejected, and "all" of them."""
    counts = dict.fromkeys(STATUS_FILTERS, 0)
    for status, count in qa_set.pairs.values_list("status").annotate(count=Count("pk")).order_by():
        counts[status] = count
    counts["all"] = sum(counts[status] for status in QAPair.Status.values)
    return counts


def qa_set_sft_jsonl(*, qa_set: QASet) -> bytes:
    """The set's approved pairs as the Q&A JSONL training.sft.sft_records_from_qa reads: one {"question",
    "answer"} line each, with the source ("document", "chunk", "context") alongside (training.qa.qa_record).
    Empty when none is approved."""
    from training import qa
    from training.rag import Chunk

    lines = [
        json.dumps(
            qa.qa_record(
                qa.QAPair(question=pair.question, answer=pair.answer),
                Chunk(document=pair.document, chunk=pair.chunk_index, text=pair.context),
            ),
            ensure_ascii=False,
        )
        + "\n"
        for pair in qa_set.pairs.filter(status=QAPair.Status.APPROVED).order_by("pk")
    ]
    return "".join(lines).encode("utf-8")
