"""Public verification of issued documents (no login): by the token printed in the QR code, or by upload."""

from django.urls import path

from . import verify

app_name = "documents"

urlpatterns = [
    path("verify/", verify.verify_upload, name="verify-upload"),
    path("verify/<str:token>/", verify.verify, name="verify"),
]
