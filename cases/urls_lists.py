"""Routes owned by the lists part of the portal: my work, the list and its exports, dashboard, notifications."""

from django.urls import path

from . import views_lists

urlpatterns = [
    path("entrustments/", views_lists.entrustment_list, name="entrustment-list"),
    path("entrustments/export.<slug:fmt>", views_lists.entrustment_export, name="entrustment-export"),
    path("dashboard/", views_lists.dashboard, name="dashboard"),
    path("notifications/", views_lists.notifications, name="notifications"),
    path("notifications/<int:pk>/read/", views_lists.notification_read, name="notification-read"),
    path("notifications/read-all/", views_lists.notification_read, name="notification-read-all"),
]
