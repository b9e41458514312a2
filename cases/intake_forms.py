"""Forms of the police case intake. They collect input; the services decide.

Each form's field names are the keys of the services' ValidationError message dicts, so
a refusal lands at the field it is about (`apply_service_error`). Checks here are only the
ones a form must do before a service can be called (types, choices, upload type and size).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from agencies.models import Organisation, OrgKind, Role

from .evidence import ACCEPT, check_evidence_file
from .models import ApprovalLevel, Asset, Case, EntrustmentState, EvidenceKind, Holding, LegalBasisKind
from .workflow import DisposalError


def apply_service_error(form: forms.Form, exc: Exception, field_map: dict[str, str] | None = None) -> None:
    """Put a service's refusal on the form: at the field it names, else at the top of the form."""
    field_map = field_map or {}
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for key, messages in exc.message_dict.items():
            name = field_map.get(key, key)
            for message in messages:
                form.add_error(name if name in form.fields else None, message)
    elif isinstance(exc, ValidationError):
        for message in exc.messages:
            form.add_error(None, message)
    elif isinstance(exc, DisposalError):
        name = field_map.get(exc.field, exc.field) if exc.field else None
        form.add_error(name if name in form.fields else None, exc.message)
    else:
        raise exc


def _text(label, model, name, **kwargs) -> forms.CharField:
    return forms.CharField(label=label, max_length=model._meta.get_field(name).max_length, **kwargs)


# --------------------------------------------------------------------------- the case


class LocalDateTimeField(forms.DateTimeField):
    """A `datetime-local` input read as wall-clock time in the portal's zone (Asia/Shanghai)."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, datetime):
            return value
        for fmt in self.input_formats:
            try:
                naive = datetime.strptime(str(value).strip(), fmt)
            except ValueError:
                continue
            # Explicit zone, not the request's: a seizure time is Beijing time whoever types it.
            return timezone.make_aware(naive, ZoneInfo(settings.TIME_ZONE))
        raise ValidationError(self.error_messages["invalid"], code="invalid")


class CaseForm(forms.Form):
    bureau = forms.ModelChoiceField(label=_("Bureau"), queryset=Organisation.objects.none(), empty_label=None)
    case_number = _text(_("Case number"), Case, "case_number")
    title = _text(_("Title"), Case, "title")
    seized_at = LocalDateTimeField(label=_("Seized at"), help_text=_("Beijing time (Asia/Shanghai)."))
    seizure_decision_no = _text(_("Seizure decision number"), Case, "seizure_decision_no")
    custodian = _text(_("Custodian"), Case, "custodian",
                      help_text=_("Who keeps the seized property, apart from the case team."))

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["bureau"].queryset = bureaus_for_officer(user)

    def clean_seized_at(self):
        value = self.cleaned_data["seized_at"]
        if value and value > timezone.now():
            raise ValidationError(_("The seizure time cannot be in the future."))
        return value


def bureaus_for_officer(user):
    """The bureaus in which `user` is an active officer: where they may register cases."""
    return Organisation.objects.filter(
        kind=OrgKind.BUREAU, is_active=True,
        memberships__user=user, memberships__role=Role.OFFICER, memberships__is_active=True,
    ).distinct().order_by("name")


# --------------------------------------------------------------------------- legal basis


class LegalBasisForm(forms.Form):
    kind = forms.ChoiceField(label=_("Legal basis"), choices=[("", "—")] + list(LegalBasisKind.choices))
    document_no = _text(_("Document number"), Case, "basis_document_no")
    basis_date = forms.DateField(label=_("Date of the document"), widget=forms.DateInput(attrs={"type": "date"},
                                                                                        format="%Y-%m-%d"))
    authority = _text(_("Issuing authority"), Case, "basis_authority",
                      help_text=_("The court or authority that issued the document."))
    owner_consent = forms.BooleanField(label=_("The owner consents to disposal before judgment"), required=False)
    approval_level = forms.ChoiceField(
        label=_("Approval level"), required=False, choices=[("", "—")] + list(ApprovalLevel.choices),
        help_text=_("Pre-judgment disposal needs approval at county level or higher."))

    def clean_basis_date(self):
        value = self.cleaned_data["basis_date"]
        if value and value > timezone.localdate():
            raise ValidationError(_("The document date cannot be in the future."))
        return value


# --------------------------------------------------------------------------- holdings


class AssetChoiceField(forms.ModelChoiceField):
    def to_python(self, value):
        # int() reads any Unicode digit ("႘" is 8): only the plain ids the form offers name an asset.
        if value not in self.empty_values and not (str(value).isascii() and str(value).isdigit()):
            raise forms.ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)

    def label_from_instance(self, obj):
        return f"{obj.symbol} — {obj.name} ({obj.chain})"


class HoldingForm(forms.Form):
    asset = AssetChoiceField(label=_("Asset"),
                             queryset=Asset.objects.filter(is_active=True).order_by("symbol", "chain"))
    address = forms.CharField(label=_("Address"), max_length=120,
                              widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false",
                                                            "class": "mono"}))
    # Text, not a number field: the amount is converted exactly by the service, never through a float.
    amount = forms.CharField(label=_("Amount"), max_length=100,
                             widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
                             help_text=_("In whole coins, e.g. 1.5 BTC; a point for decimals."))
    location = _text(_("Where it sits"), Holding, "location", help_text=_("Wallet, device or exchange account."))


class ImportForm(forms.Form):
    file = forms.FileField(
        label=_("Holdings file (.csv or .xlsx)"),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.xlsx"}),
        help_text=_("The first row names the columns asset, address, amount, location (chain optional)."),
    )


# --------------------------------------------------------------------------- evidence


class EvidenceForm(forms.Form):
    kind = forms.ChoiceField(label=_("Kind of evidence"), choices=[("", "—")] + list(EvidenceKind.choices))
    file = forms.FileField(label=_("File"), max_length=255,
                           widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}),
                           help_text=_("PDF, JPEG, PNG, MP4, MP3 or ZIP."))
    description = forms.CharField(label=_("Description"), max_length=200, required=False)

    def clean_file(self):
        return check_evidence_file(self.cleaned_data["file"])


# --------------------------------------------------------------------------- entrustment


class HoldingChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.asset.symbol} {obj.asset.format_amount(obj.declared_amount)} — {obj.address} ({obj.location})"


def entrustable_holdings(case):
    """Holdings of `case` in no live entrustment (never entrusted, or whose entrustment was cancelled/refused)."""
    from django.db.models import Q

    return (case.holdings.filter(Q(entrustment__isnull=True)
                                 | Q(entrustment__state__in=[EntrustmentState.CANCELLED, EntrustmentState.REFUSED]))
            .select_related("asset").order_by("asset__symbol", "id"))


class EntrustForm(forms.Form):
    holdings = HoldingChoiceField(label=_("Holdings to entrust"), queryset=Holding.objects.none(),
                                  widget=forms.CheckboxSelectMultiple)
    bce = forms.ModelChoiceField(label=_("Equity exchange"), empty_label=None,
                                 queryset=Organisation.objects.filter(kind=OrgKind.BCE, is_active=True)
                                 .order_by("name"))

    def __init__(self, *args, case, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["holdings"].queryset = entrustable_holdings(case)
