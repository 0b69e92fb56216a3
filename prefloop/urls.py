from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/", include("evaluator.api_urls")),
    path("", include("evaluator.urls")),
]

# Unhandled errors: a 503 page when a database, cache or broker is unreachable, a styled 500 otherwise.
handler500 = "evaluator.views.errors.server_error"
