"""Routes owned by the entrustment part of the portal: the entrustment page and its actions."""

from django.urls import path

from . import views_entrustment as views

urlpatterns = [
    path("entrustments/<int:pk>/", views.entrustment_detail, name="entrustment-detail"),
    path("entrustments/<int:pk>/actions/<slug:key>/", views.entrustment_action, name="entrustment-action"),
    path("lots/<int:pk>/actions/<slug:key>/", views.lot_action, name="lot-action"),
    path("victim-returns/<int:pk>/actions/<slug:key>/", views.victim_return_action, name="victim-return-action"),
]
