"""The rating page: HTMX partial swaps, the plain-POST fallback, the Content-Security-Policy and login lockout."""

import re

import pytest
from django.urls import reverse

from evaluator.models import Assignment, CriterionChoice, Judgement
from tests import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def all_sides(campaign, side: str) -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


def two_pairs():
    campaign = factories.campaign(overlap=1)
    factories.comparison(campaign, texts=("first answer a", "first answer b"))
    factories.comparison(campaign, texts=("second answer a", "second answer b"))
    return campaign


def test_an_htmx_submission_returns_the_next_pair_as_a_partial(client, annotator) -> None:
    campaign = two_pairs()
    client.force_login(annotator)
    client.get(reverse("rate"))
    first = Assignment.objects.get()

    response = client.post(reverse("rate_submit", args=[first.token]), all_sides(campaign, "left"), **HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "<body" not in html
    second = Assignment.objects.exclude(pk=first.pk).get()
    assert str(second.token) in html and str(first.token) not in html
    assert second.comparison.candidate_a.text in html and second.comparison.candidate_b.text in html
    assert first.comparison.candidate_a.text not in html
    assert "1 rated · campaign 50% complete" in html
    assert Judgement.objects.get().assignment == first


def test_the_last_htmx_submission_returns_the_done_partial(client, annotator) -> None:
    campaign = factories.campaign(overlap=1)
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    response = client.post(reverse("rate_submit", args=[assignment.token]), all_sides(campaign, "tie"), **HTMX)
    assert response.status_code == 200
    assert "Nothing to rate right now" in response.content.decode()
    assert "<html" not in response.content.decode()


def test_an_incomplete_htmx_submission_returns_the_same_pair_with_errors(client, annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    choices = all_sides(campaign, "left")
    del choices["overall"]
    response = client.post(reverse("rate_submit", args=[assignment.token]), choices, **HTMX)
    assert response.status_code == 400
    assert str(assignment.token) in response.content.decode()
    assert "<html" not in response.content.decode()
    assert not Judgement.objects.exists()


def test_a_plain_post_redirects_to_the_next_pair(client, annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator, left_is_a=False)
    client.force_login(annotator)
    response = client.post(reverse("rate_submit", args=[assignment.token]), all_sides(campaign, "left"))
    assert response.status_code == 302
    assert response["Location"] == reverse("rate")
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {"b"}


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_another_annotators_token_is_refused_with_403_and_writes_nothing(
    client, annotator, second_annotator, headers
) -> None:
    campaign = factories.campaign()
    task = factories.assignment(factories.comparison(campaign), annotator)
    before = Assignment.objects.values().get(pk=task.pk)
    client.force_login(second_annotator)
    response = client.post(reverse("rate_submit", args=[task.token]), all_sides(campaign, "left"), **headers)
    assert response.status_code == 403
    assert not Judgement.objects.exists() and not CriterionChoice.objects.exists()
    assert Assignment.objects.values().get(pk=task.pk) == before
    assert Assignment.objects.count() == 1  # nor was a pair claimed for the intruder


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_a_repeated_submission_stores_one_judgement_and_answers_the_same_both_times(client, annotator, headers) -> None:
    campaign = two_pairs()
    client.force_login(annotator)
    client.get(reverse("rate"))
    first = Assignment.objects.get()
    url = reverse("rate_submit", args=[first.token])

    responses = [client.post(url, all_sides(campaign, side), **headers) for side in ("left", "right")]

    # The page's CSRF token is masked afresh on every render; all else must be byte for byte the same.
    bodies = [re.sub(rb'name="csrfmiddlewaretoken" value="\w+"', b"", response.content) for response in responses]
    assert [response.status_code for response in responses] == ([200, 200] if headers else [302, 302])
    assert bodies[0] == bodies[1] and responses[0].get("Location") == responses[1].get("Location")
    assert Judgement.objects.get().assignment == first
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {"a" if first.left_is_a else "b"}
    assert Assignment.objects.count() == (2 if headers else 1)  # the HTMX answer claimed the next pair, once


def test_the_page_shows_progress_without_model_names(client, annotator) -> None:
    campaign = factories.campaign(overlap=1)
    base = factories.variant(name="hidden-base-name")
    tuned = factories.variant(name="hidden-tuned-name")
    factories.comparison(campaign, variants=(base, tuned), texts=("one", "two"))
    factories.comparison(campaign, variants=(base, tuned), texts=("three", "four"))
    factories.judgement(factories.comparison(campaign, variants=(base, tuned)), annotator)
    client.force_login(annotator)
    html = client.get(reverse("rate")).content.decode()
    assert "1 rated · campaign 33% complete" in html
    assert "hidden-base-name" not in html and "hidden-tuned-name" not in html


def test_the_rating_page_has_a_nonced_csp_and_no_inline_handlers_or_styles(client, annotator) -> None:
    factories.assignment(factories.comparison(factories.campaign()), annotator)
    client.force_login(annotator)
    response = client.get(reverse("rate"))
    policy = response["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ):
        assert directive in policy
    nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", policy).group(1)
    html = response.content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts, "the page loads its scripts"
    assert all(f'nonce="{nonce}"' in tag and "src=" in tag for tag in scripts)
    assert re.search(r"<script[^>]*>(?!</script>)", html) is None, "no inline script bodies"
    assert re.search(r"\son[a-z]+\s*=", html) is None
    assert re.search(r"\sstyle\s*=", html) is None and "<style" not in html
    assert 'src="/static/rating-keys.js"' in html
    # Another request gets another nonce.
    assert nonce not in client.get(reverse("rate"))["Content-Security-Policy"]


def test_six_failed_logins_lock_the_account_even_for_the_right_password(client, annotator) -> None:
    url = reverse("login")
    for _ in range(6):
        response = client.post(url, {"username": "ann", "password": "wrong"})
        assert "_auth_user_id" not in client.session
    response = client.post(url, {"username": "ann", "password": factories.PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_correct_login_after_a_few_failures_still_works(client, annotator) -> None:
    url = reverse("login")
    for _ in range(3):
        client.post(url, {"username": "ann", "password": "wrong"})
    response = client.post(url, {"username": "ann", "password": factories.PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(annotator.pk)
