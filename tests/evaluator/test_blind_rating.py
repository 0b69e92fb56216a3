"""Blind rating: no annotator-facing response names or numbers a model, variant, adapter, job or row.

Every response an annotator can get (the login page and the redirects to and from it, the campaign list, picking a
campaign, the page, the HTMX partials, submit, skip, flag, the done page, the error re-renders, and the 403, 404 and
405 answers) is scanned, body, headers and cookies, for the variants' names, base model and adapter paths, the
retrieval collection's name, and the primary keys of the variants, comparisons, candidates, prompts and training
job. The campaign has a retrieval (RAG) variant with "show retrieved passages" on, and every pair page is checked to
be symmetric: the left and right answers carry the same markup but for their texts and side names.
"""

import re
import uuid

import pytest
from django.urls import reverse

from evaluator.models import Assignment, Comparison, DocumentCollection, ModelVariant, Prompt, TrainingJob
from tests import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SECRET_TEXTS = [
    "zephyr-secret-base",
    "zephyr-secret-dpo-round-3",
    "rag-secret-librarian",
    "/models/zephyr-secret-7b",
    "/adapters/secret-round-3",
    "/adapters/secret-rag",
    "secret-rag-shelf",
]


def _blind_campaign():
    campaign = factories.campaign(overlap=1, allow_both_bad=True, show_reference=True, show_retrieved=True)
    base = factories.variant(pk=910001, name="zephyr-secret-base", base_model="/models/zephyr-secret-7b")
    job = TrainingJob.objects.create(pk=910101, campaign=campaign, parent_variant=base)
    tuned = factories.variant(
        pk=910002,
        name="zephyr-secret-dpo-round-3",
        base_model="/models/zephyr-secret-7b",
        adapter_path="/adapters/secret-round-3",
        parent=base,
        training_job=job,
    )
    rag = factories.variant(
        pk=910003,
        name="rag-secret-librarian",
        base_model="/models/zephyr-secret-7b",
        adapter_path="/adapters/secret-rag",
        collection=DocumentCollection.objects.create(name="secret-rag-shelf"),
    )
    rows = []
    for number, (first, second) in enumerate([(base, tuned), (base, rag), (tuned, rag)]):
        question = factories.prompt(
            campaign, pk=950000 + number, reference=f"Reference {number}", context=f"Context {number}"
        )
        # Only the retrieval variant's answers carry passages, as generation stores them.
        passages = [{"document": f"handbook-{number}.md", "chunk": 930000 + number, "text": "A passage.", "score": 0.5}]
        candidate_a = factories.candidate(
            question, first, pk=920000 + 2 * number, text=f"Answer A{number}", retrieved=_if_rag(first, passages)
        )
        candidate_b = factories.candidate(
            question, second, pk=920001 + 2 * number, text=f"Answer B{number}", retrieved=_if_rag(second, passages)
        )
        rows.append(
            Comparison.objects.create(
                pk=940000 + number,
                campaign=campaign,
                prompt=question,
                candidate_a=candidate_a,
                candidate_b=candidate_b,
                variant_a=first,
                variant_b=second,
            )
        )
    return campaign, rows


def _if_rag(variant: ModelVariant, passages: list[dict]) -> list[dict]:
    return passages if variant.collection_id else []


def _assert_symmetric(body: str, what: str) -> None:
    """The two answers of a pair page carry the same markup once their texts and side names are set aside: nothing
    beside an answer (passages, references, badges) tells one from the other."""
    answers = re.findall(r'<article class="answer card".*?</article>', body, flags=re.S)
    if not answers:
        return
    assert len(answers) == 2, f"{what}: {len(answers)} answers"

    def shape(article: str, side: str) -> str:
        article = re.sub(r"Answer [AB]\d", "TEXT", article)
        article = re.sub(r"<kbd>[fg]</kbd>", "<kbd>KEY</kbd>", article)
        return article.replace(side, "SIDE").replace(side.capitalize(), "SIDE")

    assert shape(answers[0], "left") == shape(answers[1], "right"), f"{what}: the answers differ beyond their text"
    assert "passage" not in answers[0].lower(), f"{what}: passages are shown under an answer"


def _secret_numbers() -> set[str]:
    numbers = {str(pk) for pk in ModelVariant.objects.values_list("pk", flat=True)}
    numbers |= {str(pk) for pk in TrainingJob.objects.values_list("pk", flat=True)}
    for row in Comparison.objects.all():
        numbers |= {str(row.pk), str(row.candidate_a_id), str(row.candidate_b_id)}
    numbers |= {str(pk) for pk in Prompt.objects.values_list("pk", flat=True)}
    numbers |= {str(930000 + number) for number in range(3)}  # the passages' chunk numbers
    return numbers


def _assert_blind(response, client, what: str) -> None:
    body = response.content.decode()
    headers = "\n".join(f"{name}: {value}" for name, value in response.items())
    cookies = "\n".join(f"{morsel.key}={morsel.value}" for morsel in client.cookies.values())
    numbers = _secret_numbers()
    for where, text in (("body", body), ("headers", headers), ("cookies", cookies)):
        for secret in SECRET_TEXTS:
            assert secret not in text, f"{what}: {where} shows {secret!r}"
        for number in re.findall(r"(?<![\w.-])\d{6}(?![\w.-])", text):
            assert number not in numbers, f"{what}: {where} shows the row number {number}"
    for value in re.findall(r'[\w:-]+="([^"]*)"', body):
        assert not set(re.findall(r"\d+", value)) & numbers, f"{what}: an attribute carries a row number: {value}"
    _assert_symmetric(body, what)


def test_no_annotator_facing_response_reveals_a_model_or_a_row(client, annotator, second_annotator) -> None:
    campaign, rows = _blind_campaign()
    rate = reverse("rate")
    seen = 0

    def check(response, what: str, status: int) -> None:
        nonlocal seen
        assert response.status_code == status, (what, response.status_code)
        _assert_blind(response, client, what)
        seen += 1

    # Before logging in: the redirects to the login page, the page itself, a failed and a successful login.
    check(client.get(rate), "the anonymous redirect to log in", 302)
    check(client.get(reverse("home")), "the anonymous home redirect", 302)
    check(client.get(reverse("login")), "the login page", 200)
    login = {"username": "ann", "password": "not the password"}
    check(client.post(reverse("login"), login), "a failed login", 200)
    check(client.post(reverse("login"), {**login, "password": factories.PASSWORD}), "the login redirect", 302)
    check(client.get(reverse("home")), "the home redirect", 302)
    check(client.get(reverse("rate_campaigns")), "the campaign list", 200)
    check(client.post(reverse("rate_campaign_pick", args=[campaign.pk])), "picking the campaign", 302)
    check(client.post(reverse("rate_next")), "the next campaign with work", 302)

    check(client.get(rate), "the rating page", 200)
    check(client.get(rate, **HTMX), "the HTMX pair", 200)
    first = Assignment.objects.get()
    page = client.get(rate).content.decode()
    assert "Answer A" in page and campaign.name in page
    with_rag = rows.index(first.comparison) > 0  # pairs 1 and 2 have the retrieval variant
    assert ("Passages retrieved for this question (1)" in page) == with_rag == ("handbook-" in page)

    incomplete = {"overall": "left"}
    check(client.post(reverse("rate_submit", args=[first.token]), incomplete), "the error re-render", 400)
    check(client.post(reverse("rate_submit", args=[first.token]), incomplete, **HTMX), "the HTMX error", 400)
    flag = {"side": "right", "reason": "identity", "note": "says which model it is"}
    check(client.post(reverse("rate_flag", args=[first.token]), flag, **HTMX), "the HTMX flag", 200)
    check(client.post(reverse("rate_flag", args=[first.token]), {**flag, "reason": "unsafe"}), "a plain flag", 302)
    check(client.post(reverse("rate_flag", args=[first.token]), {"side": "up"}, **HTMX), "a refused flag", 400)

    choices = dict.fromkeys(campaign.criterion_slugs, "both_bad")
    check(client.post(reverse("rate_submit", args=[first.token]), choices, **HTMX), "the HTMX submit", 200)
    second = Assignment.objects.exclude(pk=first.pk).get()
    check(client.post(reverse("rate_skip", args=[second.token]), {"reason": ""}, **HTMX), "a refused skip", 400)
    check(client.post(reverse("rate_skip", args=[second.token]), {"reason": "unsure"}, **HTMX), "the HTMX skip", 200)
    third = Assignment.objects.exclude(pk__in=[first.pk, second.pk]).get()
    check(client.post(reverse("rate_skip", args=[third.token]), {"reason": ""}), "a refused plain skip", 302)
    check(client.post(reverse("rate_submit", args=[third.token]), choices), "a plain submit", 302)
    check(client.get(rate), "the done page", 200)
    check(client.get(rate, **HTMX), "the HTMX done partial", 200)
    assert "Nothing to rate right now" in client.get(rate).content.decode()

    # What an annotator is refused: others' pages and tokens (403), unknown ones (404), a wrong method (405).
    theirs = factories.assignment(rows[0], second_annotator)
    check(client.post(reverse("rate_submit", args=[theirs.token]), choices), "another's token", 403)
    check(client.post(reverse("rate_skip", args=[theirs.token]), {"reason": "x"}, **HTMX), "another's skip", 403)
    check(client.post(reverse("rate_flag", args=[theirs.token]), flag, **HTMX), "another's flag", 403)
    check(client.get(reverse("manage")), "the manage page", 403)
    check(client.get(reverse("stats_campaign", args=[campaign.pk])), "the statistics page", 403)
    check(client.get(reverse("api_campaigns")), "the API", 403)
    check(client.post(reverse("rate_submit", args=[uuid.uuid4()]), choices), "an unknown token", 404)
    check(client.get("/rate/not-a-token/"), "a malformed token", 404)
    check(client.get(f"/manage/campaigns/{campaign.pk}/nope/"), "an unknown page", 404)
    check(client.get(reverse("rate_submit", args=[first.token])), "a GET of the submit action", 405)
    assert seen == 33


@pytest.mark.parametrize("left_is_a", [True, False])
@pytest.mark.parametrize("pair", [1, 2])
def test_a_rag_answer_carries_no_marker_its_rival_lacks(client, annotator, pair: int, left_is_a: bool) -> None:
    _campaign, rows = _blind_campaign()
    factories.assignment(rows[pair], annotator, left_is_a=left_is_a)
    client.force_login(annotator)
    response = client.get(reverse("rate"))
    _assert_blind(response, client, f"pair {pair}")
    body = response.content.decode()
    assert body.count("handbook-") == 1 and body.index("handbook-") < body.index('<section class="answers">')


def test_the_symmetry_check_itself_catches_passages_under_one_answer() -> None:
    lopsided = (
        '<article class="answer card" id="left">Answer A1<details class="passages">Retrieved passages (2)</details>'
        '</article><article class="answer card" id="right">Answer B1</article>'
    )
    with pytest.raises(AssertionError, match="differ beyond their text"):
        _assert_symmetric(lopsided, "a lopsided page")


def test_the_blind_check_itself_catches_a_leak(client, annotator) -> None:
    # Guard against a scan that passes vacuously: a response that does name a variant and a row must fail it.
    _blind_campaign()
    client.force_login(annotator)
    response = client.get(reverse("rate"))
    response.content = response.content.replace(b"</main>", b'<i data-x="910002">zephyr-secret-base</i></main>')
    with pytest.raises(AssertionError, match="zephyr-secret-base"):
        _assert_blind(response, client, "a leaking page")
    response.content = response.content.replace(b"zephyr-secret-base", b"")
    with pytest.raises(AssertionError, match="910002"):
        _assert_blind(response, client, "a leaking page")
