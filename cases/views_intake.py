"""The police case intake: register a case, its legal basis, holdings and evidence, then entrust BCE.

Views are thin: fetch with `case_for_user` (the same 404 for "missing" and "not yours"),
check that the person holds the role the action needs in the case's bureau (403 otherwise:
they may read the case but not change it), call the service, and put its refusal on the form.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_safe

from agencies.models import Membership, Role

from . import intake
from .access import case_for_user, evidence_for_user
from .intake_forms import (
    CaseForm,
    EntrustForm,
    EvidenceForm,
    HoldingForm,
    ImportForm,
    LegalBasisForm,
    apply_service_error,
    bureaus_for_officer,
    entrustable_holdings,
)
from .models import EntrustmentState
from .selectors import visible_cases, visible_entrustments
from .services import case_record_legal_basis, case_register, entrustment_create, evidence_add, holding_register
from .workflow import DisposalError, NotPermitted, member_of

OFFICER, APPROVER = Role.OFFICER, Role.APPROVER


def _case_to_act_on(request, pk, *roles):
    """The case, if the person may see it (else 404) and holds one of `roles` in its bureau (else 403)."""
    case = case_for_user(request.user, pk)
    if member_of(request.user, case.bureau, roles) is None:
        raise PermissionDenied(_("Only officers of the case's bureau may change this case."))
    return case


def _data(request):
    # Bound on every POST, even one whose fields are all empty (`request.POST or None` would not bind it).
    return request.POST if request.method == "POST" else None


def _files(request):
    return request.FILES if request.method == "POST" else None


def _detail_url(case, anchor: str = "") -> str:
    return reverse("case-detail", args=[case.pk]) + (f"#{anchor}" if anchor else "")


# --------------------------------------------------------------------------- register a case


@login_required
@require_http_methods(["GET", "POST"])
def case_intake(request):
    bureaus = bureaus_for_officer(request.user)
    if not bureaus.exists():
        raise PermissionDenied(_("Only officers of a case-handling bureau register cases."))
    form = CaseForm(_data(request), user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            case = case_register(actor=request.user, **form.cleaned_data)
        except NotPermitted:
            raise PermissionDenied
        except (ValidationError, DisposalError) as exc:
            apply_service_error(form, exc)
        else:
            messages.success(request, _("Case %(number)s registered. Record its legal basis and holdings next.")
                             % {"number": case.case_number})
            return redirect("case-detail", case.pk)
    recent = visible_cases(request.user).filter(bureau__in=bureaus).select_related("bureau")[:20]
    return render(request, "cases/intake/case_form.html", {"form": form, "recent": recent})


# --------------------------------------------------------------------------- the case page


@login_required
@require_safe
def case_detail(request, pk):
    case = case_for_user(request.user, pk)
    visible = visible_entrustments(request.user)
    entrustments = list(case.entrustments.filter(pk__in=visible.values("pk")).order_by("-id"))
    visible_ids = {e.pk for e in entrustments}
    holdings = list(case.holdings.select_related("asset", "entrustment").order_by("asset__symbol", "asset__chain",
                                                                                   "id"))
    for h in holdings:
        h.amount_display = h.asset.format_amount(h.declared_amount)
        h.entrustment_visible = h.entrustment_id in visible_ids
    evidence = (case.evidence.filter(Q(entrustment__isnull=True) | Q(entrustment__in=visible.values("pk")))
                .select_related("uploaded_by", "entrustment").order_by("-uploaded_at", "-id"))
    roles = set(Membership.objects.filter(user=request.user, organisation=case.bureau, is_active=True,
                                          organisation__is_active=True).values_list("role", flat=True))
    context = {
        "case": case,
        "holdings": holdings,
        "evidence": evidence,
        "entrustments": entrustments,
        "basis_problems": case.legal_basis_problems(),
        "can_prepare": OFFICER in roles,
        "can_add_evidence": bool(roles & {OFFICER, APPROVER}),
        "entrustable": sum(1 for h in holdings if h.entrustment_id is None
                           or h.entrustment.state in (EntrustmentState.CANCELLED, EntrustmentState.REFUSED)),
    }
    return render(request, "cases/intake/case_detail.html", context)


# --------------------------------------------------------------------------- legal basis


@login_required
@require_http_methods(["GET", "POST"])
def case_basis(request, pk):
    case = _case_to_act_on(request, pk, OFFICER)
    initial = {"kind": case.legal_basis, "document_no": case.basis_document_no, "basis_date": case.basis_date,
               "authority": case.basis_authority, "owner_consent": case.owner_consent,
               "approval_level": case.approval_level}
    form = LegalBasisForm(_data(request), initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            case_record_legal_basis(actor=request.user, case=case, **form.cleaned_data)
        except NotPermitted:
            raise PermissionDenied
        except (ValidationError, DisposalError) as exc:
            apply_service_error(form, exc)
        else:
            messages.success(request, _("The legal basis is recorded."))
            return redirect(_detail_url(case, "basis"))
    return render(request, "cases/intake/basis_form.html", {"case": case, "form": form})


# --------------------------------------------------------------------------- holdings


@login_required
@require_http_methods(["GET", "POST"])
def case_holdings(request, pk):
    case = _case_to_act_on(request, pk, OFFICER)
    form = HoldingForm(_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            holding = holding_register(actor=request.user, case=case, **form.cleaned_data)
        except NotPermitted:
            raise PermissionDenied
        except (ValidationError, DisposalError) as exc:
            apply_service_error(form, exc)
        else:
            messages.success(request, _("Holding registered: %(amount)s %(symbol)s at %(address)s.") % {
                "amount": holding.asset.format_amount(holding.declared_amount), "symbol": holding.asset.symbol,
                "address": holding.address})
            if "another" in request.POST:
                return redirect("case-holdings", case.pk)
            return redirect(_detail_url(case, "holdings"))
    return render(request, "cases/intake/holding_form.html", {"case": case, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def case_import(request, pk):
    case = _case_to_act_on(request, pk, OFFICER)
    if request.method == "POST" and "token" in request.POST:
        return _import_good_rows(request, case)
    form = ImportForm(_data(request), _files(request))
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            table = intake.read_table(upload)
        except intake.ImportFileError as exc:
            form.add_error("file", str(exc))
        else:
            check = intake.check_rows(table, case=case)
            if check.ok:
                return _import(request, case, [r.as_session() for r in check.good], form=form)
            token = (intake.remember_good_rows(request.session, case=case, check=check, filename=upload.name)
                     if check.good else None)
            return render(request, "cases/intake/import_report.html", {
                "case": case, "form": ImportForm(), "errors": check.errors, "bad_rows": check.bad_rows,
                "good": check.good, "token": token, "checked": len(check.good) + len(check.bad_rows),
                "filename": upload.name,
            })
    return render(request, "cases/intake/import_form.html", {"case": case, "form": form})


def _import_good_rows(request, case):
    entry = intake.take_good_rows(request.session, case=case, token=request.POST.get("token"))
    if entry is None:
        messages.error(request, _("This import is no longer pending: it was done already or has expired. "
                                  "Upload the file again."))
        return redirect("case-import", case.pk)
    return _import(request, case, entry["rows"], form=ImportForm())


def _import(request, case, rows, *, form):
    try:
        holdings = intake.import_rows(actor=request.user, case=case, rows=rows)
    except NotPermitted:
        raise PermissionDenied
    except intake.ImportRefused as exc:
        return render(request, "cases/intake/import_report.html", {
            "case": case, "form": ImportForm(), "errors": exc.errors, "bad_rows": sorted({e.row for e in exc.errors}),
            "good": [], "token": None, "refused_on_import": True,
        })
    except DisposalError as exc:
        form.add_error(None, exc.message)
        return render(request, "cases/intake/import_form.html", {"case": case, "form": form})
    messages.success(request, ngettext("%(n)s holding imported.", "%(n)s holdings imported.", len(holdings))
                     % {"n": len(holdings)})
    return redirect(_detail_url(case, "holdings"))


# --------------------------------------------------------------------------- evidence


@login_required
@require_http_methods(["GET", "POST"])
def case_evidence(request, pk):
    # evidence_add admits the bureau's officers and approvers alike.
    case = _case_to_act_on(request, pk, OFFICER, APPROVER)
    form = EvidenceForm(_data(request), _files(request))
    if request.method == "POST" and form.is_valid():
        try:
            evidence = evidence_add(actor=request.user, case=case, kind=form.cleaned_data["kind"],
                                    upload=form.cleaned_data["file"], description=form.cleaned_data["description"])
        except NotPermitted:
            raise PermissionDenied
        except (ValidationError, DisposalError) as exc:
            apply_service_error(form, exc)
        else:
            messages.success(request, _("Evidence “%(name)s” saved. SHA-256: %(sha)s")
                             % {"name": evidence.original_name, "sha": evidence.sha256})
            return redirect(_detail_url(case, "evidence"))
    return render(request, "cases/intake/evidence_form.html", {"case": case, "form": form})


# --------------------------------------------------------------------------- entrustment


@login_required
@require_http_methods(["GET", "POST"])
def case_entrust(request, pk):
    case = _case_to_act_on(request, pk, OFFICER)
    form = EntrustForm(_data(request), case=case)
    if request.method == "POST" and form.is_valid():
        try:
            entrustment = entrustment_create(actor=request.user, case=case,
                                             holdings=list(form.cleaned_data["holdings"]),
                                             bce=form.cleaned_data["bce"])
        except NotPermitted:
            raise PermissionDenied
        except (ValidationError, DisposalError) as exc:
            apply_service_error(form, exc)
        else:
            messages.success(request, _("Entrustment %(number)s drafted; the bureau's approver signs it off to "
                                        "BCE.") % {"number": entrustment.number})
            return redirect("entrustment-detail", entrustment.pk)
    context = {"case": case, "form": form, "basis_problems": case.legal_basis_problems(),
               "has_holdings": entrustable_holdings(case).exists()}
    return render(request, "cases/intake/entrust_form.html", context)


@login_required
@require_safe
def evidence_download(request, pk):
    """The stored evidence file, to whoever may see what it is evidence of."""
    from django.http import FileResponse

    evidence = evidence_for_user(request.user, pk)
    return FileResponse(evidence.file.open("rb"), as_attachment=True, filename=evidence.original_name)
