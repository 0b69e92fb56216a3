"""The retrain page (its labelled groups, a refused form coming back with its values) and the variants page with an
archived variant, in headless Chromium under the Content-Security-Policy; screenshots kept under test-artifacts/."""

from pathlib import Path

import pytest

from evaluator.models import ModelVariant
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_the_retrain_page_groups_its_fields_and_an_archived_variant_moves_to_its_section(
    live_server, page, artifacts_dir: Path
) -> None:
    factories.user("ada", "admin")
    campaign = factories.campaign(name="Heritage")
    parent = factories.variant(name="smollm2 · greedy", base_model="smollm2-135m-instruct")
    factories.variant(name="smollm2 · sampled", base_model="smollm2-135m-instruct", parent=parent)
    retired = factories.variant(name="old prompt template", base_model="smollm2-135m-instruct")
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")

    page.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    page.click("text=Set up a retrain job")
    page.wait_for_load_state()
    assert page.url.endswith(f"/manage/campaigns/{campaign.pk}/retrain/")
    legends = page.locator("fieldset legend").all_inner_texts()
    assert legends == ["Method and parent", "Data selection", "SFT data", "QLoRA", "DPO", "Schedule"]
    # Every select is wide enough for its longest option: nothing cut off.
    for select in page.locator("form.retrain select:not([multiple])").all():
        assert select.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), select.get_attribute("name")
    page.screenshot(path=str(artifacts_dir / "retrain-page.png"), full_page=True)

    page.select_option("#id_parent_variant", label="smollm2 · greedy")
    page.fill("#id_max_steps", "0")  # the browser allows it (min -1); the form refuses it
    page.fill("#id_learning_rate", "0.0002")
    page.click("text=Queue retrain job")
    page.wait_for_load_state()
    assert page.locator(".field.invalid #id_max_steps").count() == 1
    assert page.input_value("#id_learning_rate") == "0.0002"
    page.screenshot(path=str(artifacts_dir / "retrain-page-refused.png"), full_page=True)

    page.goto(f"{live_server.url}/manage/variants/")
    page.locator("tr", has_text="old prompt template").locator("button", has_text="Archive").click()
    page.wait_for_load_state()
    archived = page.locator("#archived")
    assert archived.locator("text=old prompt template").count() == 1
    assert archived.locator("button", has_text="Unarchive").count() == 1
    assert ModelVariant.objects.get(pk=retired.pk).archived_at is not None
    page.screenshot(path=str(artifacts_dir / "variants-with-archived.png"), full_page=True)

    page.goto(f"{live_server.url}/manage/variants/{parent.pk}/")
    page.screenshot(path=str(artifacts_dir / "variant-page.png"), full_page=True)
    assert errors == []
