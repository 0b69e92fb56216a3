"""Admin pages that fit their content: the retrain form on its own page in labelled groups, styled 403 and 404 pages
with navigation, p-values said as "p < 0.001", and an agreement table that says why it shows "–"."""

import pytest

from evaluator.forms import RetrainForm
from evaluator.models import TrainingJob
from tests import factories
from tests.evaluator.test_statistics_pages import judged_campaign
from tests.evaluator.test_training_pages import RETRAIN

pytestmark = pytest.mark.django_db


def test_every_retrain_field_is_in_exactly_one_labelled_group() -> None:
    grouped = [name for _, _, names in RetrainForm.FIELDSETS for name in names]
    assert sorted(grouped) == sorted(RetrainForm.base_fields) and len(grouped) == len(set(grouped))
    legends = [legend for legend, _, _ in RetrainForm.FIELDSETS]
    assert {"Data selection", "QLoRA", "DPO", "Schedule"} <= set(legends)


def test_the_campaign_page_links_to_the_retrain_page_which_shows_the_groups(client, admin_user) -> None:
    campaign = factories.campaign()
    factories.variant(name="parent")
    client.force_login(admin_user)

    campaign_page = client.get(f"/manage/campaigns/{campaign.pk}/").content.decode()
    retrain_page = client.get(f"/manage/campaigns/{campaign.pk}/retrain/").content.decode()

    assert f'href="/manage/campaigns/{campaign.pk}/retrain/"' in campaign_page
    assert 'name="lora_r"' not in campaign_page
    for legend in ("Method and parent", "Data selection", "SFT data", "QLoRA", "DPO", "Schedule"):
        assert f"<legend>{legend}</legend>" in retrain_page
    assert retrain_page.count('name="lora_r"') == 1 and '<option value="overall"' in retrain_page


def test_a_refused_retrain_form_comes_back_with_its_values_and_the_field_error(client, admin_user) -> None:
    campaign = factories.campaign(name="Rated")
    parent = factories.variant(name="parent")
    client.force_login(admin_user)

    response = client.post(
        f"/manage/campaigns/{campaign.pk}/retrain/", {**RETRAIN, "parent_variant": parent.pk, "lora_r": 0}
    )

    html = response.content.decode()
    assert response.status_code == 200 and "<legend>QLoRA</legend>" in html
    assert "Ensure this value is greater than or equal to 1." in html and 'class="field invalid"' in html
    assert 'name="learning_rate" value="5e-05"' in html or 'name="learning_rate" value="0.00005"' in html
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize("role", ["annotator", "researcher", "outsider"])
def test_only_admins_open_or_post_the_retrain_page(client, role, annotator, researcher, outsider) -> None:
    campaign = factories.campaign()
    client.force_login({"annotator": annotator, "researcher": researcher, "outsider": outsider}[role])
    assert client.get(f"/manage/campaigns/{campaign.pk}/retrain/").status_code == 403
    assert client.post(f"/manage/campaigns/{campaign.pk}/retrain/", RETRAIN).status_code == 403
    assert not TrainingJob.objects.exists()


def test_the_403_page_is_styled_says_why_and_has_the_navigation(client, annotator) -> None:
    client.force_login(annotator)
    response = client.get("/manage/")
    html = response.content.decode()
    assert response.status_code == 403
    assert "<h1>Not allowed</h1>" in html and "Your roles: annotator." in html
    assert 'class="topbar"' in html and 'href="/rate/"' in html and "prefloop" in html and "Log out" in html


def test_the_404_page_is_styled_and_offers_the_pages_of_ones_roles(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.get("/manage/campaigns/999999/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in html and "<code>/manage/campaigns/999999/</code>" in html
    assert 'href="/manage/"' in html and 'href="/stats/"' in html and 'class="topbar"' in html


def test_the_404_page_for_a_signed_out_visitor_links_home_only(client) -> None:
    html = client.get("/no-such-page/").content.decode()
    assert "<h1>Not found</h1>" in html and 'href="/"' in html and 'href="/manage/"' not in html


def test_p_values_are_said_as_p_below_and_agreement_explains_its_dash(client, researcher, annotator) -> None:
    # One annotator (k = 1): 14 answers on the right, none on the left; no comparison has two raters.
    campaign, _, _ = judged_campaign([annotator], wins_for_b=14, ties=0)
    client.force_login(researcher)

    html = client.get(f"/stats/{campaign.pk}/").content.decode()

    assert "p = &lt; 0.001" not in html and "p = < 0.001" not in html
    assert "0.0% of 14, p &lt; 0.001" in html
    note = html.split('id="agreement-missing"')[1].split("</p>")[0]
    assert "needs comparisons with judgements from at least two raters" in note
    assert "(k = 1)" in note and "raise the overlap k to 2 or more" in note


def test_the_agreement_note_is_absent_when_agreement_is_computed(client, researcher, annotator, second_annotator):
    campaign, _, _ = judged_campaign([annotator, second_annotator])
    client.force_login(researcher)
    html = client.get(f"/stats/{campaign.pk}/").content.decode()
    assert "Krippendorff" in html and 'id="agreement-missing"' not in html
