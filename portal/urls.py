from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from cases import views_lists as case_lists
from documents import views as document_views

urlpatterns = [
    path("", case_lists.home, name="home"),
    path("", include("cases.urls_entrustment")),
    path("", include("cases.urls_lists")),
    path("", include("cases.urls_intake")),
    path("documents/<int:pk>/download/", document_views.download, name="document-download"),
    path("documents/<int:pk>/regenerate/", document_views.regenerate, name="document-regenerate"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("accounts/", include("accounts.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    # The admin signs in through the portal's login, which leads on to the second factor.
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    path("", include("documents.urls")),
]
