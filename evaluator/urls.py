from django.urls import include, path

from evaluator import views

urlpatterns = [
    path("", views.home, name="home"),
    path("rate/", views.rate, name="rate"),
    path("rate/<uuid:token>/", views.rate_submit, name="rate_submit"),
    path("stats/", views.stats_index, name="stats_index"),
    path("stats/token/", views.api_token_rotate, name="api_token_rotate"),
    path("stats/<int:campaign_id>/", views.stats_campaign, name="stats_campaign"),
    path("stats/<int:campaign_id>/export/", include("evaluator.export_urls")),
    path("manage/", views.manage, name="manage"),
    path("manage/campaigns/new/", views.campaign_create, name="campaign_create"),
    path("manage/variants/new/", views.variant_create, name="variant_create"),
    path("manage/campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign_detail"),
    path("manage/campaigns/<int:campaign_id>/prompts/", views.prompts_import, name="prompts_import"),
    path("manage/campaigns/<int:campaign_id>/generate/", views.generation_queue, name="generation_queue"),
    path("manage/campaigns/<int:campaign_id>/retrain/", views.training_queue, name="training_queue"),
    path("manage/jobs/<int:job_id>/", views.training_job_detail, name="training_job_detail"),
]
