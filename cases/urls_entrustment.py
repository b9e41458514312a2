"""Routes owned by the entrustment part of the portal."""

urlpatterns = []
