from django.contrib import admin

from cases.admin_tools import ReadOnlyAdmin

from .models import Document


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ["number", "version", "type", "entrustment", "issuer", "created_at", "sha256"]
    list_filter = ["type"]
    search_fields = ["number", "entrustment__number", "sha256"]
    exclude = ["token"]  # the verify token is printed on the paper, not shown around the office
