from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("two-factor/", views.verify, name="two-factor"),
    path("two-factor/enrol/", views.enrol, name="enrol"),
    path("two-factor/backup-codes/", views.backup_codes, name="backup-codes"),
]
