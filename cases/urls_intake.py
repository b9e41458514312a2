"""Routes owned by the intake part of the portal."""

urlpatterns = []
