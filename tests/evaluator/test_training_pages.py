"""The admin's model pages: queueing a retrain from the form, the job page and its live part, the family tree,
exports and document collections."""

import io
import os
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from evaluator.models import Document, DocumentCollection, JobStatus, ModelExport, TrainingJob
from tests import factories

pytestmark = pytest.mark.django_db

RETRAIN = {
    "method": "dpo",
    "criterion": "overall",
    "exclude_flagged": "on",
    "held_out_share": 0.25,
    "sft_source": "chosen",
    "load_in_4bit": "on",
    "double_quant": "on",
    "beta": 0.1,
    "learning_rate": 5e-5,
    "num_train_epochs": 1,
    "max_steps": -1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_length": 512,
    "optim": "paged_adamw_8bit",
    "seed": 42,
    "save_steps": 25,
    "report_to": "none",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
}


@pytest.fixture
def rated(annotator):
    campaign = factories.campaign(name="Rated")
    parent, other = factories.variant(name="parent"), factories.variant(name="other")
    for _ in range(4):
        factories.judgement(factories.comparison(campaign, variants=(parent, other)), annotator, "a")
    return campaign, parent


def test_the_retrain_form_queues_a_job_with_its_held_out_share(client, admin_user, rated) -> None:
    campaign, parent = rated
    client.force_login(admin_user)
    response = client.post(f"/manage/campaigns/{campaign.pk}/retrain/", {**RETRAIN, "parent_variant": parent.pk})
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/manage/jobs/{job.pk}/"
    assert len(job.config["held_out_prompts"]) == 1  # a quarter of four prompts
    assert job.config["training"]["qlora"] == {
        "load_in_4bit": True,
        "double_quant": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "target_modules": "all-linear",
    }
    assert job.config["selection"]["exclude_flagged"] is True and list(job.source_campaigns.all()) == [campaign]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lora_r": 0}, "LoRA r: Ensure this value is greater than or equal to 1."),
        ({"learning_rate": "fast"}, "Learning rate: Enter a number."),
        ({"max_steps": 0}, "Max steps: Use -1 to run all epochs"),
        ({"method": "sft", "sft_source": "qa"}, "Q&amp;A file (JSONL): Choose the Q&amp;A file to train on."),
        ({"held_out_ids": "nope"}, "Held-out prompts not in “Rated”: nope."),
    ],
)
def test_a_bad_retrain_form_names_the_field_and_queues_nothing(client, admin_user, rated, change, message) -> None:
    campaign, parent = rated
    client.force_login(admin_user)
    response = client.post(
        f"/manage/campaigns/{campaign.pk}/retrain/", {**RETRAIN, "parent_variant": parent.pk, **change}, follow=True
    )
    assert message in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_a_malformed_qa_file_is_refused_with_its_line(client, admin_user, rated, settings, tmp_path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    campaign, parent = rated
    client.force_login(admin_user)
    upload = SimpleUploadedFile("qa.jsonl", b'{"question": "Q?", "answer": "A."}\n{"question": "no answer"}\n')
    data = {**RETRAIN, "parent_variant": parent.pk, "method": "sft", "sft_source": "qa", "qa_file": upload}
    response = client.post(f"/manage/campaigns/{campaign.pk}/retrain/", data, follow=True)
    assert "Q&amp;A file qa.jsonl, line 2: missing key(s): answer" in response.content.decode()
    assert not TrainingJob.objects.exists() and not list((tmp_path / "qa-uploads").iterdir())


def test_the_job_page_charts_the_metrics_and_stops_polling_once_the_job_ended(client, admin_user, rated) -> None:
    campaign, parent = rated
    metrics = [
        {"step": step, "epoch": step / 4, "max_steps": 4, "loss": 0.7 - step / 10, "rewards/margins": step / 10}
        for step in (1, 2, 3)
    ]
    job = TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=parent,
        status=JobStatus.RUNNING,
        metrics=metrics,
        progress_step=3,
        progress_total=4,
        attempts=1,
        worker="host:1",
    )
    client.force_login(admin_user)
    html = client.get(f"/manage/jobs/{job.pk}/").content.decode()
    assert 'hx-trigger="every 3s"' in html and "step 3 of 4 (75%)" in html
    assert "<polyline" in html and "■ loss" in html and "■ reward margin" in html
    assert "Cancel job" in html

    live = client.get(f"/manage/jobs/{job.pk}/", headers={"HX-Request": "true"})
    assert live.status_code == 200 and "<html" not in live.content.decode()
    TrainingJob.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)
    ended = client.get(f"/manage/jobs/{job.pk}/", headers={"HX-Request": "true"})
    assert ended.status_code == 286  # htmx stops polling
    assert "Resume from the newest checkpoint" in ended.content.decode()


def test_the_family_tree_shows_each_round_against_its_parent(client, admin_user, annotator, second_annotator) -> None:
    campaign = factories.campaign()
    parent = factories.variant(name="base model")
    job = TrainingJob.objects.create(campaign=campaign, parent_variant=parent, status=JobStatus.SUCCEEDED)
    child = factories.variant(name="base model · DPO #1", parent=parent, training_job=job, adapter_path="/a")
    for number in range(10):
        comparison = factories.comparison(campaign, variants=(parent, child))
        factories.judgement(comparison, annotator, "b")  # the child wins all ten
        if number < 2:
            factories.judgement(comparison, second_annotator, "tie")
    client.force_login(admin_user)
    response = client.get("/manage/variants/")
    html = response.content.decode()
    assert [row.variant for row in response.context["rows"]] == [parent, child]
    assert [row.depth for row in response.context["rows"]] == [0, 1]
    result = response.context["rows"][1].result
    assert (result.wins, result.ties, result.losses) == (10, 2, 0)
    assert result.win_rate == pytest.approx(11 / 12)
    assert result.p_value == pytest.approx(2 / 2**10)
    assert "10 / 2 / 0" in html and "92%" in html and "0.002" in html


def test_the_family_tree_reads_in_a_fixed_number_of_queries(client, admin_user, django_assert_max_num_queries) -> None:
    campaign = factories.campaign()
    parent = factories.variant()
    for number in range(5):
        job = TrainingJob.objects.create(campaign=campaign, parent_variant=parent, status=JobStatus.SUCCEEDED)
        parent = factories.variant(name=f"round {number}", parent=parent, training_job=job, adapter_path="/a")
    client.force_login(admin_user)
    with django_assert_max_num_queries(10):
        assert client.get("/manage/variants/").status_code == 200


def test_an_export_of_a_variant_without_an_adapter_is_refused(client, admin_user) -> None:
    variant = factories.variant(name="plain")
    client.force_login(admin_user)
    response = client.post(f"/manage/variants/{variant.pk}/export/", {"kind": "merged"}, follow=True)
    assert "“plain” has no adapter" in response.content.decode()
    assert not ModelExport.objects.exists()


def test_a_gguf_export_is_queued_with_the_weights_type_chosen(client, admin_user) -> None:
    variant = factories.variant(name="round 1", adapter_path="/adapters/1")
    client.force_login(admin_user)
    response = client.post(f"/manage/variants/{variant.pk}/export/", {"kind": "gguf", "outtype": "q8_0"}, follow=True)
    export = ModelExport.objects.get()
    assert (export.kind, export.outtype, export.status) == ("gguf", "q8_0", JobStatus.QUEUED)
    assert "GGUF q8_0 export of “round 1” queued." in response.content.decode()


def test_a_lora_export_in_4_bit_is_refused_and_a_merge_takes_no_weights_type(client, admin_user) -> None:
    variant = factories.variant(name="round 1", adapter_path="/adapters/1")
    client.force_login(admin_user)
    url = f"/manage/variants/{variant.pk}/export/"
    response = client.post(url, {"kind": "lora_gguf", "outtype": "q4_0"}, follow=True)
    assert "is written as one of f16, q8_0, bf16, not q4_0" in response.content.decode()
    assert not ModelExport.objects.exists()
    client.post(url, {"kind": "merged", "outtype": "q8_0"})
    assert list(ModelExport.objects.values_list("kind", "outtype")) == [("merged", "")]


@pytest.fixture
def finished_exports(settings, tmp_path):
    """A variant with a succeeded q8_0 GGUF export and a succeeded merged export, their files where the worker
    writes them."""
    settings.ARTIFACTS_DIR = tmp_path
    variant = factories.variant(name="Round 2: DPO", adapter_path="/adapters/2")
    folder = tmp_path / "exports" / f"variant-{variant.pk}"
    merged = folder / "merged-bf16"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text('{"model_type": "llama"}')
    (merged / "model.safetensors").write_bytes(bytes(range(256)) * 5000)
    gguf = folder / f"variant-{variant.pk}-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100_000))
    done = {"status": JobStatus.SUCCEEDED, "finished_at": timezone.now()}
    return {
        "gguf": ModelExport.objects.create(variant=variant, kind="gguf", outtype="q8_0", path=str(gguf), **done),
        "merged": ModelExport.objects.create(variant=variant, kind="merged", path=str(merged), **done),
    }


def test_an_admin_downloads_a_finished_gguf_export_as_a_streamed_attachment(client, admin_user, finished_exports):
    export = finished_exports["gguf"]
    client.force_login(admin_user)
    response = client.get(f"/manage/exports/{export.pk}/download/")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="round-2-dpo-q8_0.gguf"'
    assert b"".join(response.streaming_content) == Path(export.path).read_bytes()


def test_a_merged_export_downloads_as_a_streamed_zip_of_its_folder(client, admin_user, finished_exports):
    export = finished_exports["merged"]
    client.force_login(admin_user)
    response = client.get(f"/manage/exports/{export.pk}/download/")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="round-2-dpo-merged-bf16.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == ["round-2-dpo-merged-bf16/config.json", "round-2-dpo-merged-bf16/model.safetensors"]
    assert archive.testzip() is None
    assert archive.read("round-2-dpo-merged-bf16/model.safetensors") == bytes(range(256)) * 5000


@pytest.mark.parametrize("role", ["annotator", "researcher", "outsider"])
def test_only_admins_download_exports(client, finished_exports, role, request) -> None:
    client.force_login(request.getfixturevalue(role))
    assert client.get(f"/manage/exports/{finished_exports['gguf'].pk}/download/").status_code == 403


def test_a_forged_unfinished_vanished_or_misplaced_export_is_not_found(
    client, admin_user, finished_exports, tmp_path
) -> None:
    gguf, merged = finished_exports["gguf"], finished_exports["merged"]
    client.force_login(admin_user)
    assert client.get(f"/manage/exports/{merged.pk + gguf.pk + 1000}/download/").status_code == 404
    running = ModelExport.objects.create(variant=gguf.variant, kind="gguf", outtype="f16", status=JobStatus.RUNNING)
    assert client.get(f"/manage/exports/{running.pk}/download/").status_code == 404
    Path(gguf.path).unlink()
    assert client.get(f"/manage/exports/{gguf.pk}/download/").status_code == 404
    # Only files in the exports folder are ever sent, whatever a row says.
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(b"GGUF")
    ModelExport.objects.filter(pk=merged.pk).update(path=str(outside))
    assert client.get(f"/manage/exports/{merged.pk}/download/").status_code == 404


def test_the_variants_page_links_finished_exports_for_download_instead_of_printing_their_path(
    client, admin_user, finished_exports
) -> None:
    client.force_login(admin_user)
    html = client.get("/manage/variants/").content.decode()
    for export in finished_exports.values():
        assert f'href="/manage/exports/{export.pk}/download/"' in html
        assert export.path not in html
    assert "GGUF q8_0: Succeeded" in html and 'value="lora_gguf"' in html


@pytest.mark.training
def test_a_queued_gguf_export_runs_on_the_tiny_model_and_downloads_as_a_gguf_file(
    client, admin_user, settings, tmp_path, tiny_model_dir, monkeypatch
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from evaluator.services.model_exports import model_export_run

    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    # llama.cpp's converters are fetched once per machine into the test cache, as tests/training/test_export.py does.
    cache = Path(os.environ.get("PREFLOOP_TEST_CACHE", Path(__file__).resolve().parents[2] / "var" / "test-cache"))
    monkeypatch.setenv("PREFLOOP_LLAMA_CPP_CACHE", str(cache / "llama-cpp"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    variant = factories.variant(name="tiny dpo", base_model=str(tiny_model_dir), adapter_path=str(tmp_path / "adapter"))
    client.force_login(admin_user)
    client.post(f"/manage/variants/{variant.pk}/export/", {"kind": "gguf", "outtype": "q8_0"})
    export = ModelExport.objects.get()

    model_export_run(export_id=export.pk)

    export.refresh_from_db()
    assert export.status == JobStatus.SUCCEEDED
    response = client.get(f"/manage/exports/{export.pk}/download/")
    assert response.streaming and response["Content-Disposition"] == 'attachment; filename="tiny-dpo-q8_0.gguf"'
    assert b"".join(response.streaming_content)[:4] == b"GGUF"


def test_a_collection_upload_with_a_bad_file_names_it_and_adds_nothing(client, admin_user) -> None:
    client.force_login(admin_user)
    client.post(
        "/manage/collections/new/",
        {"name": "Notes", "embedding_model": "all-MiniLM-L6-v2", "chunk_size": 400, "chunk_overlap": 40},
    )
    collection = DocumentCollection.objects.get()
    files = [SimpleUploadedFile("ok.md", b"# Fine\n\nText."), SimpleUploadedFile("bad.exe", b"MZ\x90\x00")]
    response = client.post(f"/manage/collections/{collection.pk}/documents/", {"files": files}, follow=True)
    assert "bad.exe" in response.content.decode() and "Nothing was added." in response.content.decode()
    assert not Document.objects.exists()


def test_a_collection_overlap_as_large_as_its_chunks_is_refused(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(
        "/manage/collections/new/",
        {"name": "Notes", "embedding_model": "all-MiniLM-L6-v2", "chunk_size": 100, "chunk_overlap": 100},
        follow=True,
    )
    assert "Chunk overlap: Must be smaller than the chunk size." in response.content.decode()
    assert not DocumentCollection.objects.exists()
