"""Routes owned by the lists part of the portal (placeholders until that part lands)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.urls import path


@login_required
def _placeholder(request):
    return redirect("home")


urlpatterns = [
    path("entrustments/", _placeholder, name="entrustment-list"),
    path("dashboard/", _placeholder, name="dashboard"),
    path("notifications/", _placeholder, name="notifications"),
]
