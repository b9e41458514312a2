from django.contrib import admin

from settlements import services as money

from . import services, whitelist
from .admin_tools import HistoryAdmin, NoEditMixin, ReadOnlyAdmin, service_action
from .models import (
    Approval,
    Asset,
    Case,
    CoinTransfer,
    Detection,
    DisposalPolicy,
    Entrustment,
    Event,
    EvidenceFile,
    Fill,
    Holding,
    InquiryRound,
    Jurisdiction,
    Lot,
    Notification,
    Quote,
    ReservePrice,
    Sequence,
    WhitelistedAddress,
)


@admin.register(Entrustment)
class EntrustmentAdmin(HistoryAdmin):
    list_display = ["number", "case", "bureau", "agency", "state", "state_changed_at"]
    list_filter = ["state", "bureau", "agency"]
    search_fields = ["number", "case__case_number"]
    list_select_related = ["case", "bureau", "agency"]
    readonly_fields = ["number", "case", "bureau", "bce", "agency", "platform", "policy", "prepared_by", "state",
                       "state_before_dispute", "state_changed_at", "sla_started_at", "sla_stopped_at"]
    actions = [
        service_action(services.entrustment_submit, label="Approve and submit to BCE", needs_reason=False),
        service_action(services.entrustment_accept, label="Accept (BCE)", needs_reason=False),
        service_action(services.entrustment_return, label="Return for correction", needs_reason=True),
        service_action(services.entrustment_refuse, label="Refuse", needs_reason=True),
        service_action(services.entrustment_cancel, label="Cancel (before custody)", needs_reason=True),
        service_action(services.entrustment_declare_agency_default, label="Declare agency default",
                       needs_reason=True),
        service_action(services.entrustment_open_dispute, label="Open dispute", needs_reason=True),
        service_action(services.entrustment_resolve_dispute, label="Resolve dispute", needs_reason=True),
        service_action(money.entrustment_close, label="Close and archive", needs_reason=False),
    ]

    def has_add_permission(self, request):
        return False  # entrustments are drafted through the service, with their holdings

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Lot)
class LotAdmin(HistoryAdmin):
    list_display = ["entrustment", "sequence", "asset", "quantity", "state", "failed_rounds"]
    list_filter = ["state"]
    readonly_fields = ["entrustment", "asset", "sequence", "quantity", "parent", "failed_rounds", "state",
                       "quote_currency"]
    actions = [
        service_action(services.reserve_approve, label="Approve reserve", needs_reason=False, object_kwarg="lot"),
        service_action(services.award_approve, label="Approve award", needs_reason=False, object_kwarg="lot"),
        service_action(services.lot_suspend, label="Suspend (market)", needs_reason=True, object_kwarg="lot"),
        service_action(services.lot_exhaust, label="Stop: unsold after last round", needs_reason=True,
                       object_kwarg="lot"),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WhitelistedAddress)
class WhitelistedAddressAdmin(NoEditMixin, HistoryAdmin):
    """Read-only: entries are proposed by the agency (portal or its service account); approving and revoking
    here go through the same services, with the same quorum and roles."""

    list_display = ["organisation", "asset", "address", "purpose", "platform", "state", "proposed_by", "approved_at",
                    "usable_from"]
    list_filter = ["state", "purpose", "organisation", "asset"]
    search_fields = ["address", "organisation__name", "organisation__code"]
    list_select_related = ["organisation", "asset", "platform", "proposed_by"]
    actions = [
        service_action(whitelist.whitelist_approve, label="Approve whitelist entry", needs_reason=False,
                       object_kwarg="entry"),
        service_action(whitelist.whitelist_revoke, label="Revoke whitelist entry", needs_reason=True,
                       object_kwarg="entry"),
    ]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "type", "entrustment", "actor", "actor_organisation", "from_state", "to_state"]
    list_filter = ["type"]
    search_fields = ["entrustment__number", "case__case_number"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["approved_at", "entrustment", "action", "subject", "approver"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "event", "emailed_at"]


class RecordAdmin(NoEditMixin, HistoryAdmin):
    """Rows written by services: readable with their history, never edited here."""


for model in (Case, Holding, EvidenceFile, Detection, CoinTransfer, ReservePrice, InquiryRound, Quote, Fill):
    admin.site.register(model, RecordAdmin)


@admin.register(Asset, Jurisdiction, DisposalPolicy)
class ReferenceDataAdmin(HistoryAdmin):
    """Reference data administrators maintain; every change is in the field history."""


@admin.register(Sequence)
class SequenceAdmin(ReadOnlyAdmin):
    list_display = ["series", "year", "last"]
