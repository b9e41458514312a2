"""Routes owned by the lists part of the portal."""

urlpatterns = []
