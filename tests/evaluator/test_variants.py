"""A variant is checked when it is created: a base or adapter that could never load is refused with the reason, on
the form (inline, before any service runs) and in the service (for commands and scripts), and nothing is stored."""

from pathlib import Path

import pytest

from evaluator.errors import ServiceError
from evaluator.models import ModelVariant
from evaluator.services.variants import variant_create
from tests.training.test_models import write_header_only_gguf

pytestmark = pytest.mark.django_db

FORM = {"quantization": "none", "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 24}


def post_variant(client, admin_user, **fields: str) -> str:
    client.force_login(admin_user)
    response = client.post("/manage/variants/new/", {**FORM, "name": "checked", **fields}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def text_file_named_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"plain text, not a model")
    return path


def truncated_gguf(tmp_path: Path) -> Path:
    whole = write_header_only_gguf(tmp_path / "whole.gguf", "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    return cut


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "absent.gguf", "absent.gguf: no such file"),
        (text_file_named_gguf, "notes.gguf: not a GGUF file"),
        (truncated_gguf, "cut.gguf"),
        (lambda tmp: write_header_only_gguf(tmp / "bert.gguf", "bert"), "bert"),
        (lambda tmp: tmp, "without config.json"),
    ],
    ids=["missing file", "not gguf", "truncated", "unsupported architecture", "folder without config"],
)
def test_the_variant_form_refuses_a_base_that_cannot_load_naming_the_file_and_reason(
    client, admin_user, tmp_path: Path, make, reason: str
) -> None:
    base = make(tmp_path)

    page = post_variant(client, admin_user, base_model=str(base))

    assert "Base model:" in page and reason in page
    assert not ModelVariant.objects.exists()


def test_the_variant_form_refuses_an_adapter_folder_without_its_config(
    client, admin_user, tiny_model_dir: Path, tmp_path: Path
) -> None:
    page = post_variant(client, admin_user, base_model=str(tiny_model_dir), adapter_path=str(tmp_path))

    assert f"Adapter path: {tmp_path}: no adapter_config.json, so not a PEFT adapter folder" in page
    assert not ModelVariant.objects.exists()


def test_the_variant_form_accepts_the_shipped_model_by_its_short_name(client, admin_user) -> None:
    post_variant(client, admin_user, base_model="smollm2-135m-instruct")

    assert ModelVariant.objects.get(name="checked").base_model == "smollm2-135m-instruct"


def test_the_service_refuses_a_base_that_cannot_load_and_stores_nothing(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"Model: .*notes.gguf: not a GGUF file"):
        variant_create(name="bad", base_model=str(text_file_named_gguf(tmp_path)))
    with pytest.raises(ServiceError, match="no such adapter folder"):
        variant_create(name="bad", base_model="smollm2-135m-instruct", adapter_path=str(tmp_path / "none"))
    assert not ModelVariant.objects.exists()
