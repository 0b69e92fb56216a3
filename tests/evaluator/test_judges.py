"""Endpoint judges against a real HTTP server of the test's own that answers fixed chat completions: both orders
stored, the reply read strictly, every bad reply (HTTP 4xx/5xx, malformed JSON, no side named, too slow, nobody
listening) a clear reason on the job with no half-judged pair; the API key in no table and no log; the judge
form's checks and preview; verdicts kept out of human statistics and out of DPO data unless asked for."""

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection

from evaluator.errors import ServiceError
from evaluator.models import JobStatus, Judge, JudgeJob, JudgeVerdict
from evaluator.selectors.campaigns import votes_frame
from evaluator.selectors.dpo_dataset import SelectionRules, preference_records_select
from evaluator.selectors.judges import judge_calibration, preference_dataset_metadata
from evaluator.services import judges as judge_services
from evaluator.services.judges import judge_create, judge_job_queue
from tests import factories
from training.judging import EndpointJudge, JudgeBackendError, JudgeRequest, template_problems, verdict_parse
from workers.tasks import judge_campaign

# In one transaction: the job runs in this thread (Celery's tracer), so it sees what the test wrote.
pytestmark = pytest.mark.django_db

SECRET = "sk-judge-test-3f9a1c77e0b24d5e"
KEY_VARIABLE = "PREFLOOP_TEST_JUDGE_KEY"


@dataclass
class FixedServer:
    """What the server answers: `reply(prompt)` gives (HTTP status, body bytes); every request is recorded."""

    url: str
    reply: Callable[[str], tuple[int, bytes]]
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)


def completion(text: str) -> tuple[int, bytes]:
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 6},
    }
    return 200, json.dumps(body).encode()


def prefers_the_good_answer(prompt: str) -> tuple[int, bytes]:
    """A judge that names the answer holding "good", whichever side it is shown on."""
    first = prompt.split("[Answer A]", 1)[1].split("[Answer B]", 1)[0]
    return completion(f"The better one is clear.\nVERDICT: {'A' if 'good' in first else 'B'}")


@pytest.fixture
def server() -> Iterator[FixedServer]:
    state = FixedServer(url="", reply=prefers_the_good_answer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            time.sleep(state.delay)
            status, payload = state.reply(body["messages"][0]["content"])
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    monkeypatch.setattr(judge_services, "JUDGE_BACKOFF_SECONDS", 0.01)
    return KEY_VARIABLE


def endpoint_judge(url: str, **fields: Any) -> Judge:
    values = {
        "name": f"judge-{len(url)}-{time.monotonic_ns()}",
        "kind": Judge.Kind.ENDPOINT,
        "base_url": url,
        "model_name": "fixed",
        "api_key_env": KEY_VARIABLE,
        "timeout_seconds": 5.0,
        "max_retries": 1,
        "concurrency": 3,
        **fields,
    }
    return judge_create(**values)


def campaign_with_pairs(count: int = 3):
    """A campaign whose pairs hold one "good" answer each: on even pairs candidate a, on odd ones candidate b."""
    campaign = factories.campaign()
    first, second = factories.variant(), factories.variant()
    pairs = [
        factories.comparison(
            campaign,
            variants=(first, second),
            texts=("a good answer", "a poor answer") if number % 2 == 0 else ("a poor answer", "a good answer"),
        )
        for number in range(count)
    ]
    return campaign, pairs


def run_job(job: JudgeJob) -> JudgeJob:
    """Run the job's task here, through Celery's tracer, so that its failure policy records a failure."""
    judge_campaign.apply((job.pk,))
    job.refresh_from_db()
    return job


def secret_in_database() -> list[str]:
    """Every table whose rows hold the secret anywhere."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the database itself
            if SECRET in repr(cursor.fetchall()):
                found.append(table)
    return found


def test_each_pair_is_judged_in_both_orders_and_both_verdicts_are_stored(server, key, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    campaign, pairs = campaign_with_pairs(3)
    judge = endpoint_judge(server.url)
    job = run_job(judge_job_queue(judge=judge, campaign=campaign, criteria=["overall", "relevance"]))

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.done == job.total == 3 * 2 and job.unparseable == 0
    verdicts = JudgeVerdict.objects.filter(judge=judge)
    assert verdicts.count() == 3 * 2 * 2
    for number, pair in enumerate(pairs):
        by_order = {v.order: v for v in verdicts.filter(comparison=pair, criterion="overall")}
        good_side = "a" if number % 2 == 0 else "b"
        # The good answer is shown first in order ab when it is candidate a, and in order ba when it is b.
        assert by_order["ab"].choice == ("left" if good_side == "a" else "right")
        assert by_order["ba"].choice == ("right" if good_side == "a" else "left")
        assert all(v.parse_status == "ok" and v.raw_output.endswith(f"VERDICT: {'A' if v.choice == 'left' else 'B'}")
                   for v in by_order.values())  # fmt: skip
        assert all(v.prompt_tokens == 40 and v.completion_tokens == 6 and v.latency_ms >= 0 for v in by_order.values())
    # Each request carried the key in its header, and the swapped order showed the answers the other way round.
    assert len(server.requests) == 12 and server.requests[0]["path"] == "/v1/chat/completions"
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert {r["body"]["model"] for r in server.requests} == {"fixed"}
    # The key was read from the environment: it is in no table and in no log line.
    assert secret_in_database() == []
    assert SECRET not in caplog.text


def test_the_judge_is_never_counted_with_the_humans_nor_in_dpo_data_unless_asked(server, key, annotator) -> None:
    campaign, pairs = campaign_with_pairs(3)
    factories.judgement(pairs[0], annotator, "b")  # a human says b where the judge says a
    judge = endpoint_judge(server.url)
    run_job(judge_job_queue(judge=judge, campaign=campaign, criteria=["overall"]))

    votes = votes_frame(campaign=campaign)
    assert len(votes) == len(campaign.criterion_slugs)  # the one human judgement's choices, no verdict among them
    human_only = preference_records_select(campaign=campaign)
    assert len(human_only) == 1 and human_only[0]["chosen"][0]["content"] == "a poor answer"
    assert preference_dataset_metadata(judge_id=None)["judge"] is None

    with_judge = preference_records_select(campaign=campaign, rules=SelectionRules(judge_id=judge.pk))
    # The human decides pair 0; the judge adds pairs 1 and 2, each choosing its good answer.
    assert len(with_judge) == 3
    assert [record["chosen"][0]["content"] for record in with_judge[1:]] == ["a good answer", "a good answer"]
    assert preference_dataset_metadata(judge_id=judge.pk)["judge"]["name"] == judge.name

    page = judge_calibration(judge=judge, campaign=campaign, n_boot=50)
    [overall] = page.sections
    assert overall["summary"]["n_agreement"] == 1 and overall["summary"]["agreement"] == 0.0
    assert overall["summary"]["consistency"] == 1.0
    assert [row["comparison_id"] for row in overall["disagreements"]] == [pairs[0].pk]


def test_a_reply_naming_no_side_is_stored_as_unparseable_and_never_guessed(server, key) -> None:
    server.reply = lambda prompt: completion("Both answers have merit; I would rather not choose. Answer A is nice.")
    campaign, _ = campaign_with_pairs(2)
    judge = endpoint_judge(server.url)
    job = run_job(judge_job_queue(judge=judge, campaign=campaign, criteria=["overall"]))

    assert job.status == JobStatus.SUCCEEDED and job.done == 2 and job.unparseable == 4
    assert set(JudgeVerdict.objects.values_list("choice", "parse_status")) == {(None, "no_verdict")}
    [section] = judge_calibration(judge=judge, campaign=campaign, n_boot=10).sections
    assert section["summary"]["unparseable"] == 4 and section["summary"]["consistency"] is None


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (lambda prompt: (500, b'{"error": "overloaded"}'), 'answered HTTP 500: {"error": "overloaded"} (gave up'),
        (lambda prompt: (401, b'{"error": "bad key"}'), 'answered HTTP 401: {"error": "bad key"}'),
        (lambda prompt: (200, b"{'choices': oops"), "answered with malformed JSON: {'choices': oops"),
        (lambda prompt: (200, b'{"result": "A"}'), "JSON that is no chat completion"),
    ],
    ids=["5xx", "4xx", "malformed-json", "not-a-completion"],
)
def test_a_failing_endpoint_fails_the_job_saying_why_and_counts_no_verdict(server, key, caplog, reply, message):
    server.reply = reply
    campaign, _ = campaign_with_pairs(2)
    job = run_job(judge_job_queue(judge=endpoint_judge(server.url), campaign=campaign, criteria=["overall"]))

    assert job.status == JobStatus.FAILED and message in job.error, job.error
    assert server.url in job.error and SECRET not in job.error and SECRET not in caplog.text
    assert not JudgeVerdict.objects.exists() and job.done == 0
    # Four requests (two pairs, two orders), three at a time; the first failure cancels those not yet sent. A 5xx
    # is asked again once (max_retries=1), the other failures are not.
    if "500" in message:
        assert len(server.requests) >= 3 * 2
    else:
        assert len(server.requests) <= 2 * 2


def test_a_slow_endpoint_times_out_and_a_dead_one_is_named(server, key) -> None:
    server.delay = 1.5
    campaign, _ = campaign_with_pairs(1)
    slow = run_job(
        judge_job_queue(
            judge=endpoint_judge(server.url, timeout_seconds=0.3, max_retries=0),
            campaign=campaign,
            criteria=["overall"],
        )
    )
    assert slow.status == JobStatus.FAILED and "did not answer within 0.3 s (gave up after 1 try)" in slow.error

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    dead = run_job(judge_job_queue(judge=endpoint_judge(dead_url), campaign=campaign, criteria=["overall"]))
    assert dead.status == JobStatus.FAILED and "cannot be reached" in dead.error and dead_url in dead.error
    assert not JudgeVerdict.objects.exists()


def test_a_failed_job_resumed_judges_only_the_missing_pairs(server, key) -> None:
    calls = {"n": 0}

    def fails_after_the_first_chunk(prompt: str) -> tuple[int, bytes]:
        calls["n"] += 1
        return (400, b"stop") if calls["n"] > 2 * judge_services.JUDGE_CHUNK else prefers_the_good_answer(prompt)

    server.reply = fails_after_the_first_chunk
    campaign, _ = campaign_with_pairs(judge_services.JUDGE_CHUNK + 2)
    judge = endpoint_judge(server.url, concurrency=1)
    job = run_job(judge_job_queue(judge=judge, campaign=campaign, criteria=["overall"]))
    assert job.status == JobStatus.FAILED and job.done == judge_services.JUDGE_CHUNK
    # Every stored pair has both orders: no half pair.
    assert JudgeVerdict.objects.count() == 2 * judge_services.JUDGE_CHUNK

    server.reply = prefers_the_good_answer
    before = len(server.requests)
    assert judge_services.judge_job_resume(job=job)
    job = run_job(job)
    assert job.status == JobStatus.SUCCEEDED and job.done == job.total == judge_services.JUDGE_CHUNK + 2
    assert len(server.requests) - before == 2 * 2


def test_an_unset_key_variable_is_refused_naming_it_and_never_queues(server, monkeypatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    campaign, _ = campaign_with_pairs(1)
    judge = endpoint_judge(server.url)
    with pytest.raises(ServiceError, match=f"environment variable {KEY_VARIABLE}, which should hold"):
        judge_job_queue(judge=judge, campaign=campaign, criteria=["overall"])
    assert not JudgeJob.objects.exists()


def test_a_key_variable_unset_on_the_worker_fails_the_job_naming_it(server, key, monkeypatch) -> None:
    campaign, _ = campaign_with_pairs(1)
    job = judge_job_queue(judge=endpoint_judge(server.url), campaign=campaign, criteria=["overall"])
    monkeypatch.delenv(KEY_VARIABLE)
    job = run_job(job)
    assert job.status == JobStatus.FAILED and KEY_VARIABLE in job.error and not server.requests


def test_a_queued_job_cancelled_never_runs(server, key) -> None:
    campaign, _ = campaign_with_pairs(1)
    job = judge_job_queue(judge=endpoint_judge(server.url), campaign=campaign, criteria=["overall"])
    assert judge_services.judge_job_cancel(job=job)
    job = run_job(job)
    assert job.status == JobStatus.CANCELLED and not server.requests and not JudgeVerdict.objects.exists()


def test_the_verdict_line_is_read_strictly() -> None:
    assert verdict_parse("Reasons.\nVERDICT: A").choice == "left"
    assert verdict_parse("verdict: tie\n").choice == "tie"
    assert verdict_parse("VERDICT: B\nVERDICT: B").choice == "right"
    assert verdict_parse("VERDICT: A\nVERDICT: B").status == "ambiguous"
    assert verdict_parse("I prefer A. The verdict: A is better").status == "no_verdict"
    assert verdict_parse("**VERDICT: A**").status == "no_verdict"
    assert verdict_parse("").choice is None


def test_a_template_needs_its_placeholders() -> None:
    assert template_problems("Compare {prompt} {answer_a} {answer_b}. VERDICT: A/B/TIE") == []
    assert template_problems("Which is better? VERDICT: A") == [
        "The template lacks the placeholders {prompt}, {answer_a}, {answer_b}."
    ]
    assert "Unknown placeholder {answer_c}" in " ".join(
        template_problems("{prompt}{answer_a}{answer_b}{answer_c} VERDICT")
    )
    assert "braces do not pair up" in template_problems("{prompt {answer_a} {answer_b} VERDICT")[0]
    assert "never asks for the verdict line" in template_problems("{prompt} {answer_a} {answer_b}")[0]


def test_the_endpoint_client_repr_holds_no_key() -> None:
    client = EndpointJudge(base_url="http://127.0.0.1:9/v1", model="m", api_key=SECRET, retries=0, timeout=0.2)
    assert SECRET not in repr(client)
    with pytest.raises(JudgeBackendError) as failure:
        client.judge([JudgeRequest(key="k", prompt="p")])
    assert SECRET not in str(failure.value)


def judge_post(client, url: str, **overrides: str) -> Any:
    from evaluator.views.judges import TEMPLATE_SLUGS, _template_field
    from training.judging import default_template

    data = {
        "name": "House judge",
        "kind": "endpoint",
        "base_url": "http://127.0.0.1:9/v1",
        "model_name": "gpt-judge",
        "api_key_env": "JUDGE_KEY",
        "quantization": "none",
        "batch_size": "8",
        "timeout_seconds": "30",
        "max_retries": "2",
        "concurrency": "4",
        "max_new_tokens": "256",
        **{_template_field(slug): default_template(slug) for slug in TEMPLATE_SLUGS},
        **overrides,
    }
    return client.post(url, data)


def test_the_judge_form_refuses_a_template_without_placeholders_and_a_pasted_key(client, admin_user) -> None:
    client.force_login(admin_user)
    response = judge_post(client, "/manage/judges/new/", template_overall="Which answer is better? VERDICT: A or B")
    assert response.status_code == 200
    assert "The template lacks the placeholders {prompt}, {answer_a}, {answer_b}." in response.text
    response = judge_post(client, "/manage/judges/new/", api_key_env=SECRET)
    assert response.status_code == 200 and "not the key itself" in response.text
    response = judge_post(client, "/manage/judges/new/", kind="local")
    assert response.status_code == 200 and "A local judge needs a base model." in response.text
    assert not Judge.objects.exists()


def test_the_judge_form_previews_a_real_pair_and_saves(client, admin_user) -> None:
    campaign, pairs = campaign_with_pairs(1)
    client.force_login(admin_user)
    preview = judge_post(client, "/manage/judges/new/", action="preview")
    assert preview.status_code == 200 and not Judge.objects.exists()
    text = re.sub(r"\s+", " ", preview.text)
    assert f"Pair {pairs[0].pk} of {campaign.name}" in text and "[Answer A] a good answer" in text

    saved = judge_post(client, "/manage/judges/new/", action="save")
    judge = Judge.objects.get()
    assert saved.status_code == 302 and saved["Location"] == f"/manage/judges/{judge.pk}/"
    assert judge.api_key_env == "JUDGE_KEY" and judge.templates["overall"].startswith("You compare two answers")
    page = client.get(f"/manage/judges/{judge.pk}/")
    assert page.status_code == 200 and "Start judging" in page.text


def test_a_judge_job_page_shows_its_failure_and_offers_resume(client, admin_user, server, key) -> None:
    server.reply = lambda prompt: (503, b"down for maintenance")
    campaign, _ = campaign_with_pairs(1)
    job = run_job(
        judge_job_queue(judge=endpoint_judge(server.url, max_retries=0), campaign=campaign, criteria=["overall"])
    )
    client.force_login(admin_user)
    page = client.get(f"/manage/judge-jobs/{job.pk}/")
    assert page.status_code == 200
    assert "answered HTTP 503: down for maintenance" in page.text and "Resume" in page.text


def plant_verdicts(judge: Judge, pairs: list, choices: tuple[str, str] = ("left", "right")) -> None:
    for pair in pairs:
        factories.judge_verdicts(judge, pair, choices)


def test_the_calibration_page_costs_the_same_queries_however_many_pairs(client, researcher, annotator) -> None:
    from django.test.utils import CaptureQueriesContext

    judge = Judge.objects.create(name="planted", kind="endpoint", base_url="http://127.0.0.1:9/v1", model_name="m")
    counts = []
    for size in (2, 6):
        campaign, pairs = campaign_with_pairs(size)
        for pair in pairs:
            factories.judgement(pair, annotator, "b")
        plant_verdicts(judge, pairs)
        client.force_login(researcher)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/stats/{campaign.pk}/judges/{judge.pk}/")
        assert response.status_code == 200
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text))
        assert "Judge-only leaderboard" in text and f"0% on {size} pairs" in text
        counts.append(len(captured))
    assert counts[0] == counts[1]
