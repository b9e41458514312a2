from django.contrib import admin

from cases.admin import RecordAdmin
from cases.admin_tools import HistoryAdmin

from .models import Appointment, Membership, Organisation, PerformanceBond


@admin.register(Organisation)
class OrganisationAdmin(HistoryAdmin):
    list_display = ["name", "kind", "code", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "code"]


@admin.register(Membership)
class MembershipAdmin(HistoryAdmin):
    list_display = ["user", "organisation", "role", "is_active"]
    list_filter = ["role", "organisation__kind"]


admin.site.register(Appointment, RecordAdmin)
admin.site.register(PerformanceBond, RecordAdmin)
