"""Admin back office helpers: history without revert, read-only states, actions via services."""

import inspect

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse
from simple_history.admin import SimpleHistoryAdmin

from .workflow import DisposalError


class HistoryAdmin(SimpleHistoryAdmin):
    """Field history is shown; reverting is refused on POST too.

    A revert rebuilds an old row and saves it: the state would go backwards outside any
    transition (or raise under the concurrency mixin). Hiding the button is not enough.
    """

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method == "POST":
            raise PermissionDenied("Reverting to an earlier version is not allowed: the record is append-only.")
        return super().history_form_view(request, object_id, version_id, extra_context)

    def save_model(self, request, obj, form, change):
        if change and not form.has_changed():
            return  # an unchanged form would only add an empty row to the field history
        super().save_model(request, obj, form, change)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return fields + [f for f in ("state",) if hasattr(self.model, "state") and f not in fields]


def service_action(service, *, label: str, needs_reason: bool, object_kwarg: str = "entrustment"):
    """An admin action that calls `service(actor=..., <object_kwarg>=obj, reason=...)` for each row.

    The admin goes through the same service as the portal: same roles, same guards, same record.
    """

    def action(modeladmin, request, queryset):
        if needs_reason and "apply" not in request.POST:
            return TemplateResponse(request, "admin/service_action_reason.html", {
                **modeladmin.admin_site.each_context(request),
                "title": label, "queryset": queryset, "action": request.POST.get("action"),
                "opts": modeladmin.model._meta,
            })
        reason = request.POST.get("reason", "")
        for obj in queryset:
            kwargs = {"actor": request.user, object_kwarg: obj}
            # signature() sees through @transaction.atomic; __code__ would be the wrapper's (*args, **kwds).
            if needs_reason or "reason" in inspect.signature(service).parameters:
                kwargs["reason"] = reason
            try:
                service(**kwargs)
            except (DisposalError, ValidationError) as exc:
                text = exc.message if isinstance(exc, DisposalError) else "; ".join(exc.messages)
                modeladmin.message_user(request, f"{obj}: {text}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"{obj}: {label} ✓", messages.SUCCESS)
        return None

    action.__name__ = service.__name__
    return admin.action(description=label)(action)


class NoEditMixin:
    """Rows written by services only: the back office reads them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(NoEditMixin, admin.ModelAdmin):
    pass
