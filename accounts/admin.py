"""Two-factor devices in the admin: who has one, and a reset for a lost phone. Keys are never shown.

django-otp's own admins show (and let one type) TOTP keys and backup tokens; they are replaced.
"""

from django.contrib import admin
from django.contrib.admin.exceptions import NotRegistered
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import SealedTOTPDevice
from .services import two_factor_reset

for model in (TOTPDevice, StaticDevice):
    try:
        admin.site.unregister(model)
    except NotRegistered:
        pass


@admin.register(SealedTOTPDevice)
class SealedTOTPDeviceAdmin(admin.ModelAdmin):
    list_display = ["user", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    list_filter = ["confirmed"]
    search_fields = ["user__username"]
    fields = ["user", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # people enrol themselves, with their own authenticator

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        # Deleting the authenticator resets the person's second factor: backup codes go with it.
        two_factor_reset(user=obj.user)

    def delete_queryset(self, request, queryset):
        for device in queryset.select_related("user"):
            two_factor_reset(user=device.user)
