"""One function per action of the disposal process, up to the sale.

Every function is keyword-only, takes the acting `actor`, runs in one transaction, checks
the actor's organisation and role, runs the guarded transition, and writes the business
event. Views, the admin, Celery tasks and tests all call these; nothing else writes a state.
The money side (receipt to close) is in `settlements/services.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import MAX_PREC, Context, Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from agencies.models import Appointment, Organisation, OrgKind, PerformanceBond, Role
from ledger import postings as ledger

from . import approvals, whitelist
from .addresses import AddressError, validate_address
from .evidence import check_evidence_file
from .fields import sum_units
from .models import (
    ApprovalLevel,
    Asset,
    Case,
    CoinTransfer,
    DisposalPolicy,
    Entrustment,
    EntrustmentState,
    EventType,
    EvidenceFile,
    Fill,
    Holding,
    HoldingStatus,
    InquiryRound,
    LegalBasisKind,
    Lot,
    LotState,
    Quote,
    ReservePrice,
    ReserveRule,
    Sequence,
    TransferKind,
    TransferStatus,
    WhitelistPurpose,
)
from .workflow import (
    DisposalError,
    emit,
    lock_entrustment,
    lock_lot,
    reason_required,
    require,
    run_transition,
    _transition_refusal,
    save_tracked,
    transition_with_reason,
)

OFFICER, APPROVER = Role.OFFICER, Role.APPROVER


# --------------------------------------------------------------------------- input parsing


_EXACT = Context(prec=MAX_PREC)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def parse_amount(text, *, asset: Asset, field: str = "amount") -> int:
    """'1.5' BTC → 150000000 satoshi, refusing what a careful clerk would refuse."""
    raw = str(text).strip()
    if len(raw) > 100:  # no real amount is this long; also bounds the exact arithmetic below
        raise ValidationError({field: _("This amount is too long to be a real amount.")})
    if "," in raw:
        # "1,5" is a decimal comma, not fifteen: commas only as thousands separators.
        if not _THOUSANDS.fullmatch(raw):
            raise ValidationError({field: _("Use commas only to group thousands (1,234.5); write decimals "
                                            "with a point.")})
        raw = raw.replace(",", "")
    try:
        value = Decimal(raw)
    except (InvalidOperation, ValueError):
        raise ValidationError({field: _("“%(v)s” is not a number.") % {"v": text}})
    if not value.is_finite() or "e" in raw.lower() or "_" in raw:
        raise ValidationError({field: _("Write the amount as a plain decimal number.")})
    if value <= 0:
        raise ValidationError({field: _("The amount must be greater than zero.")})
    # Exact: the default context (28 digits) would round "1.000…0001" to 1 and accept it.
    exponent = value.normalize(_EXACT).as_tuple().exponent
    if isinstance(exponent, int) and -exponent > asset.decimals:
        raise ValidationError(
            {field: _("%(sym)s has %(d)s decimals; this amount has more.") % {"sym": asset.symbol, "d": asset.decimals}}
        )
    base_units = int(value.scaleb(asset.decimals, _EXACT))
    if base_units > asset.supply_cap:
        raise ValidationError({field: _("The amount exceeds the total supply of %(sym)s.") % {"sym": asset.symbol}})
    return base_units


def parse_money(text, *, field: str, places: int = 2, max_digits: int = 24) -> Decimal:
    raw = str(text).strip()
    if "," in raw and not _THOUSANDS.fullmatch(raw):
        raise ValidationError({field: _("Use commas only to group thousands (1,234.5); write decimals "
                                        "with a point.")})
    try:
        value = Decimal(raw.replace(",", ""))
    except (InvalidOperation, ValueError):
        raise ValidationError({field: _("“%(v)s” is not an amount of money.") % {"v": text}})
    if not value.is_finite() or value <= 0:
        raise ValidationError({field: _("The amount must be greater than zero.")})
    # Bounded by the column (max_digits): larger would crash quantize() or the database.
    if value.adjusted() >= max_digits - places:
        raise ValidationError({field: _("The amount is too large.")})
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError({field: _("At most %(n)s decimal places.") % {"n": places}})
    return value


def parse_address(text: str, *, asset: Asset, field: str = "address") -> str:
    try:
        return validate_address(text, asset.address_format)
    except AddressError as exc:
        raise ValidationError({field: str(exc)})


def _text_errors(model, *fields: tuple[str, str, object]) -> dict:
    """{key: message} for each (key, model field, value) the column cannot hold (else the database raises)."""
    errors = {}
    for key, name, value in fields:
        limit = model._meta.get_field(name).max_length
        if isinstance(value, str) and "\x00" in value:
            errors[key] = _("Null characters are not allowed.")
        elif isinstance(value, str) and limit and len(value.strip()) > limit:
            errors[key] = _("At most %(n)s characters.") % {"n": limit}
    return errors


# --------------------------------------------------------------------------- cases and holdings


@transaction.atomic
def case_register(*, actor, bureau: Organisation, case_number: str, title: str, seized_at: datetime,
                  seizure_decision_no: str, custodian: str) -> Case:
    membership = require(actor, bureau, OFFICER)
    if bureau.kind != OrgKind.BUREAU:
        raise ValidationError({"bureau": _("Only a case-handling bureau registers cases.")})
    errors = _text_errors(Case, *((n, n, v) for n, v in (
        ("case_number", case_number), ("title", title), ("seizure_decision_no", seizure_decision_no),
        ("custodian", custodian))))
    for name, value in (("case_number", case_number), ("title", title), ("seizure_decision_no", seizure_decision_no),
                        ("custodian", custodian)):
        if not (value or "").strip():
            errors[name] = _("This field is required.")
    if errors:
        raise ValidationError(errors)
    if Case.objects.filter(bureau=bureau, case_number=case_number.strip()).exists():
        raise ValidationError({"case_number": _("This bureau already has a case with this number.")})
    case = Case(bureau=bureau, case_number=case_number.strip(), title=title.strip(), seized_at=seized_at,
                seizure_decision_no=seizure_decision_no.strip(), custodian=custodian.strip(), created_by=actor)
    try:
        with transaction.atomic():
            save_tracked(case, actor=actor, reason="registered")
    except IntegrityError:  # the same number registered a moment ago by someone else
        raise ValidationError({"case_number": _("This bureau already has a case with this number.")})
    emit(case=case, actor=actor, membership=membership, type=EventType.CASE_REGISTERED,
         details={"case_number": case.case_number})
    return case


@transaction.atomic
def case_record_legal_basis(*, actor, case: Case, kind: str, document_no: str, basis_date: date, authority: str,
                            owner_consent: bool = False, approval_level: str = "") -> Case:
    membership = require(actor, case.bureau, OFFICER)
    case = Case.objects.select_for_update(of=("self",)).get(pk=case.pk)
    if case.entrustments.exclude(state__in=[EntrustmentState.DRAFT, EntrustmentState.RETURNED,
                                            EntrustmentState.CANCELLED, EntrustmentState.REFUSED]).exists():
        raise DisposalError(_("The legal basis cannot change while the case is entrusted."))
    if kind not in LegalBasisKind.values:
        raise ValidationError({"kind": _("Choose a legal basis.")})
    if approval_level and approval_level not in ApprovalLevel.values:
        raise ValidationError({"approval_level": _("Choose an approval level.")})
    errors = _text_errors(Case, ("document_no", "basis_document_no", document_no),
                            ("authority", "basis_authority", authority))
    if errors:
        raise ValidationError(errors)
    case.legal_basis, case.basis_document_no, case.basis_date = kind, document_no.strip(), basis_date
    case.basis_authority, case.owner_consent, case.approval_level = authority.strip(), owner_consent, approval_level
    problems = case.legal_basis_problems()
    if problems:
        raise ValidationError({"kind": problems})
    save_tracked(case, actor=actor, reason="legal basis recorded")
    emit(case=case, actor=actor, membership=membership, type=EventType.LEGAL_BASIS_RECORDED,
         details={"kind": kind, "document_no": case.basis_document_no, "authority": case.basis_authority,
                  "owner_consent": owner_consent, "approval_level": approval_level})
    return case


@transaction.atomic
def evidence_add(*, actor, case: Case, kind: str, upload, description: str = "", entrustment=None) -> EvidenceFile:
    parties = [case.bureau] + ([entrustment.bce, entrustment.agency] if entrustment else [])
    membership = None
    for org in filter(None, parties):
        try:
            membership = require(actor, org, OFFICER, APPROVER)
            break
        except DisposalError:
            continue
    if membership is None:
        raise DisposalError(_("Only the parties to this case may add evidence."))
    try:
        check_evidence_file(upload)  # also here, so that no caller can store what a form would refuse
    except ValidationError as exc:
        raise ValidationError({"file": exc.messages})
    sha256, size = EvidenceFile.digest(upload)
    evidence = EvidenceFile(case=case, entrustment=entrustment, kind=kind, description=description,
                            original_name=upload.name[:255], size=size, sha256=sha256, uploaded_by=actor)
    evidence.file.save(upload.name, upload, save=False)
    save_tracked(evidence, actor=actor, reason="evidence added")
    emit(case=case, entrustment=entrustment, actor=actor, membership=membership, type=EventType.EVIDENCE_ADDED,
         details={"kind": kind, "name": evidence.original_name, "sha256": sha256, "size": size})
    return evidence


@transaction.atomic
def holding_register(*, actor, case: Case, asset: Asset, address: str, amount, location: str) -> Holding:
    membership = require(actor, case.bureau, OFFICER)
    if not asset.is_active:
        raise ValidationError({"asset": _("This asset is not enabled for disposal.")})
    address = parse_address(address, asset=asset)
    base_units = parse_amount(amount, asset=asset)
    if not (location or "").strip():
        raise ValidationError({"location": _("Say where the coins sit (wallet, device or exchange).")})
    if errors := _text_errors(Holding, ("location", "location", location)):
        raise ValidationError(errors)
    if Holding.objects.filter(case=case, asset=asset, address=address).exists():
        raise ValidationError({"address": _("This case already has a %(sym)s holding at this address.")
                               % {"sym": asset.symbol}})
    holding = Holding(case=case, asset=asset, address=address, declared_amount=base_units,
                      accepted_amount=base_units, location=location.strip())
    try:
        with transaction.atomic():
            save_tracked(holding, actor=actor, reason="holding declared")
    except IntegrityError:  # declared a moment ago by someone else
        raise ValidationError({"address": _("This case already has a %(sym)s holding at this address.")
                               % {"sym": asset.symbol}})
    ledger.post_seizure(holding)
    emit(case=case, actor=actor, membership=membership, type=EventType.HOLDING_REGISTERED,
         details={"asset": str(asset), "address": address, "amount": str(base_units)})
    return holding


# --------------------------------------------------------------------------- entrustment: bureau and BCE




@transaction.atomic
def entrustment_create(*, actor, case: Case, holdings: list[Holding], bce: Organisation) -> Entrustment:
    membership = require(actor, case.bureau, OFFICER)
    if bce.kind != OrgKind.BCE:
        raise ValidationError({"bce": _("Entrust an equity exchange.")})
    if not holdings:
        raise ValidationError({"holdings": _("Choose at least one holding.")})
    locked = list(Holding.objects.select_for_update(of=("self",)).filter(pk__in=[h.pk for h in holdings]))
    for h in locked:
        if h.case_id != case.pk:
            raise ValidationError({"holdings": _("A holding of another case was chosen.")})
        if h.entrustment_id is not None and h.entrustment.state not in (EntrustmentState.CANCELLED,
                                                                        EntrustmentState.REFUSED):
            raise ValidationError({"holdings": _("%(h)s is already entrusted.") % {"h": h}})
    policy = DisposalPolicy.objects.filter(jurisdiction=case.bureau.jurisdiction, is_current=True).first()
    if policy is None:
        raise DisposalError(_("No disposal policy is in force for this bureau's jurisdiction."))
    number = Sequence.next_number("entrustment", "WT", timezone.localdate().year)
    entrustment = Entrustment(number=number, case=case, bureau=case.bureau, bce=bce, policy=policy,
                              prepared_by=actor)
    save_tracked(entrustment, actor=actor, reason="drafted")
    for h in locked:
        h.entrustment = entrustment
        save_tracked(h, actor=actor, reason=f"entrusted in {entrustment.number}")
    emit(case=case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.ENTRUSTMENT_CREATED, to_state=entrustment.state,
         details={"holdings": [h.pk for h in locked], "bce": bce.code})
    return entrustment


def _submission_content(entrustment: Entrustment) -> dict:
    case = entrustment.case
    return {
        "legal_basis": [case.legal_basis, case.basis_document_no, str(case.basis_date), case.basis_authority],
        "holdings": sorted((h.pk, h.asset_id, h.address, h.declared_amount) for h in entrustment.holdings.all()),
        # Each return for correction opens a new submission: approvals of an earlier one neither count nor block.
        "returns": entrustment.events.filter(type=EventType.TRANSITION, to_state=EntrustmentState.RETURNED).count(),
    }


@transaction.atomic
def entrustment_submit(*, actor, entrustment: Entrustment, reason: str = "") -> Entrustment:
    """The bureau's approver signs off the entrustment letter: four eyes on what leaves the bureau."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, APPROVER)
    problems = entrustment.case.legal_basis_problems()
    if problems:
        raise DisposalError(" ".join(problems), field="legal_basis")
    if not entrustment.holdings.exists():
        raise DisposalError(_("The entrustment has no holdings."))
    if entrustment.state not in (EntrustmentState.DRAFT, EntrustmentState.RETURNED):
        raise DisposalError.wrong_state(entrustment, _("Only a draft or returned entrustment can be submitted."))
    if approvals.approve(entrustment=entrustment, action="submit", subject=f"entrustment:{entrustment.pk}",
                         content=_submission_content(entrustment), actor=actor, membership=membership,
                         preparer=entrustment.prepared_by):
        run_transition(entrustment, "submit", actor=actor, membership=membership, reason=reason)
    return entrustment


@transaction.atomic
def entrustment_return(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    return transition_with_reason(entrustment, "return_for_correction", actor=actor, party="bce",
                                  roles=(OFFICER, APPROVER), reason=reason)


@transaction.atomic
def entrustment_refuse(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    return transition_with_reason(entrustment, "refuse", actor=actor, party="bce", roles=(APPROVER,), reason=reason)


@transaction.atomic
def entrustment_accept(*, actor, entrustment: Entrustment, reason: str = "") -> Entrustment:
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, APPROVER)
    if entrustment.state not in (EntrustmentState.SUBMITTED,):
        raise DisposalError.wrong_state(entrustment, _("Only a submitted entrustment can be accepted."))
    if approvals.approve(entrustment=entrustment, action="accept", subject=f"entrustment:{entrustment.pk}",
                         content=_submission_content(entrustment), actor=actor, membership=membership,
                         preparer=None):
        run_transition(entrustment, "accept", actor=actor, membership=membership, reason=reason)
    return entrustment


@transaction.atomic
def agency_appoint(*, actor, entrustment: Entrustment, agency: Organisation, valuation_cny, valuation_source: str,
                   qualification_note: str, capacity_note: str, conflicts_declared: str) -> Appointment:
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, OFFICER)
    if agency.kind != OrgKind.AGENCY or not agency.is_active:
        raise ValidationError({"agency": _("Choose an active, qualified service agency.")})
    valuation = parse_money(valuation_cny, field="valuation_cny")
    errors = {name: _("This field is required.") for name, value in (
        ("valuation_source", valuation_source), ("qualification_note", qualification_note),
        ("capacity_note", capacity_note), ("conflicts_declared", conflicts_declared)) if not (value or "").strip()}
    if errors:
        raise ValidationError(errors)
    Appointment.objects.filter(entrustment=entrustment, is_current=True).update(is_current=False)
    appointment = Appointment(entrustment=entrustment, agency=agency, valuation_cny=valuation,
                              valuation_source=valuation_source, qualification_note=qualification_note,
                              capacity_note=capacity_note, conflicts_declared=conflicts_declared,
                              appointed_by=actor)
    save_tracked(appointment, actor=actor, reason="agency selected")
    entrustment.agency = agency
    run_transition(entrustment, "appoint_agency", actor=actor, membership=membership,
                   details={"agency": agency.code, "valuation_cny": str(valuation)})
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.AGENCY_APPOINTED,
         details={"agency": agency.code, "conflicts_declared": conflicts_declared, "valuation_cny": str(valuation)})
    return appointment


@transaction.atomic
def bond_post(*, actor, entrustment: Entrustment, posted_cny, reference: str) -> PerformanceBond:
    """BCE records the bond it received; the entrustment is bonded only if it covers the ratio."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, OFFICER)
    appointment = Appointment.objects.filter(entrustment=entrustment, is_current=True).first()
    if appointment is None or entrustment.state != EntrustmentState.AGENCY_APPOINTED:
        raise DisposalError.wrong_state(entrustment, _("A bond is posted once an agency is appointed and before it acts."))
    if hasattr(appointment, "bond"):
        raise DisposalError(_("This appointment already has a bond."))
    posted = parse_money(posted_cny, field="posted_cny")
    if not (reference or "").strip():
        raise ValidationError({"reference": _("This field is required.")})
    ratio = entrustment.policy.bond_ratio
    required = PerformanceBond.required_for(appointment.valuation_cny, ratio)
    if posted < required:
        raise ValidationError({"posted_cny": _("The bond must be at least %(req)s CNY (%(pct)s%% of the valuation "
                                               "%(val)s); %(short)s CNY is missing.")
                               % {"req": required, "pct": f"{(ratio * 100).normalize():f}",  # 110, not 1.1E+2
                                  "val": appointment.valuation_cny,
                                  "short": (required - posted).quantize(Decimal("0.01"))}})
    bond = PerformanceBond(appointment=appointment, ratio=ratio, required_cny=required, posted_cny=posted,
                           reference=reference.strip(), recorded_by=actor)
    save_tracked(bond, actor=actor, reason="bond posted")
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.BOND_POSTED,
         details={"posted_cny": str(posted), "required_cny": str(required), "ratio": str(ratio),
                  "reference": bond.reference})
    run_transition(entrustment, "confirm_bond", actor=actor, membership=membership)
    return bond


# --------------------------------------------------------------------------- detection and custody


@dataclass(frozen=True)
class Observation:
    holding: Holding
    observed_amount: int
    block_height: int
    controlled: bool


@transaction.atomic
def detection_record(*, actor, entrustment: Entrustment, observations: list[Observation],
                     witness: Organisation | None = None) -> Entrustment:
    """The agency's on-chain detection, witnessed. A mismatch is an exception, never a correction."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    holdings = {h.pk: h for h in entrustment.holdings.select_for_update(of=("self",))}
    seen = {o.holding.pk for o in observations}
    if seen != set(holdings):
        raise ValidationError({"observations": _("Every holding of the entrustment must be detected, once.")})
    if witness is not None and witness.kind != OrgKind.WITNESS:
        raise ValidationError({"witness": _("The witness must be a technical witness organisation.")})
    from .models import Detection

    mismatches = []
    for o in observations:
        if o.observed_amount < 0:
            raise ValidationError({"observations": _("A balance cannot be negative.")})
        holding = holdings[o.holding.pk]
        matches = o.controlled and o.observed_amount == holding.declared_amount
        Detection(holding=holding, observed_amount=o.observed_amount, block_height=o.block_height,
                  controlled=o.controlled, matches=matches, witness=witness, recorded_by=actor).save()
        holding.status = HoldingStatus.VERIFIED if matches else HoldingStatus.MISMATCH
        save_tracked(holding, actor=actor, reason="detected")
        if not matches:
            mismatches.append({"holding": holding.pk, "address": holding.address,
                               "declared": str(holding.declared_amount), "observed": str(o.observed_amount),
                               "controlled": o.controlled})
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.DETECTION_RECORDED, details={"mismatches": mismatches, "count": len(observations)})
    run_transition(entrustment, "record_mismatch" if mismatches else "record_detection", actor=actor,
                   membership=membership, details={"mismatches": mismatches})
    return entrustment


@transaction.atomic
def detection_accept_observed(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    """The bureau's approver accepts the observed balances as what is disposed of, with a reason.

    The declared amounts stay as they were; the difference is on the record and in the
    reconciliation. Addresses not under control cannot be accepted: they are not disposable.
    """
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, APPROVER)
    if entrustment.state != EntrustmentState.DETECTION_MISMATCH:
        raise DisposalError.wrong_state(entrustment, _("There is no detection mismatch to accept."))
    for holding in entrustment.holdings.select_for_update(of=("self",)):
        detection = holding.detections.order_by("-recorded_at", "-id").first()
        if not detection.controlled:
            raise DisposalError(_("Control of %(addr)s was not proven; detect it again or cancel.")
                                % {"addr": holding.address})
        holding.accepted_amount = detection.observed_amount
        holding.status = HoldingStatus.VERIFIED
        save_tracked(holding, actor=actor, reason=reason)
        ledger.post_seizure_adjustment(holding, entrustment=entrustment)
    run_transition(entrustment, "accept_detected_amounts", actor=actor, membership=membership, reason=reason)
    return entrustment


@dataclass(frozen=True)
class TransferRecord:
    holding: Holding | None
    asset: Asset
    to_address: str
    amount: int
    network_fee: int
    txid: str
    from_address: str = ""


def _validate_transfer(t: TransferRecord, *, available: int) -> str:
    if t.amount <= 0:
        raise ValidationError({"amount": _("The amount must be greater than zero.")})
    if t.network_fee < 0:
        raise ValidationError({"network_fee": _("A network fee cannot be negative.")})
    if t.amount + t.network_fee > available:
        raise ValidationError({"amount": _("%(sym)s: amount plus fee exceed what is available (%(avail)s).")
                               % {"sym": t.asset.symbol, "avail": t.asset.format_amount(available)}})
    return parse_address(t.to_address, asset=t.asset, field="to_address")


@transaction.atomic
def custody_receive(*, actor, entrustment: Entrustment, transfers: list[TransferRecord]) -> Entrustment:
    """Coins moved from the seizure addresses to the agency's custody (the hand-over)."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    if not entrustment.bond_covers():
        raise DisposalError(_("No coin may move before the performance bond covers the required ratio."))
    if not can_proceed(entrustment.receive_into_custody):
        # Before any transfer row is written: in a later state the hand-over's references already exist, and a
        # second one would fail on the database's unique constraint instead of being refused.
        raise DisposalError(_transition_refusal(entrustment, "receive_into_custody"))
    holdings = {h.pk: h for h in entrustment.holdings.select_for_update(of=("self",))}
    if {t.holding.pk for t in transfers if t.holding} != set(holdings) or any(t.holding is None for t in transfers):
        raise ValidationError({"transfers": _("Record one transfer for each holding of the entrustment.")})
    for t in transfers:
        holding = holdings[t.holding.pk]
        to_address = _validate_transfer(t, available=holding.accepted_amount)
        # Only into the agency's own vault, approved by BCE and past its cooling period.
        whitelist.require_usable(entrustment.agency, holding.asset, to_address, purpose=WhitelistPurpose.CUSTODY)
        if not t.txid.strip():
            raise ValidationError({"txid": _("The transaction id is required.")})
        CoinTransfer(entrustment=entrustment, holding=holding, asset=holding.asset, kind=TransferKind.TO_CUSTODY,
                     reference=f"{entrustment.number}-C{holding.pk}", from_address=holding.address,
                     to_address=to_address, amount=t.amount, network_fee=t.network_fee, txid=t.txid.strip(),
                     status=TransferStatus.CONFIRMED, recorded_by=actor).save()
        holding.status = HoldingStatus.IN_CUSTODY
        save_tracked(holding, actor=actor, reason="received into custody")
    ledger.post_custody_receipts(entrustment)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.TRANSFER_RECORDED, details={"kind": TransferKind.TO_CUSTODY, "count": len(transfers)})
    run_transition(entrustment, "receive_into_custody", actor=actor, membership=membership)
    return entrustment


def custody_balance(entrustment: Entrustment, asset: Asset) -> int:
    """What sits in custody for one asset: received, less what has gone on to the platform."""
    rows = CoinTransfer.objects.filter(entrustment=entrustment, asset=asset).exclude(status=TransferStatus.FAILED)
    received = sum_units(rows.filter(kind=TransferKind.TO_CUSTODY), "amount")
    sent = rows.filter(kind=TransferKind.TO_PLATFORM)
    return received - sum_units(sent, "amount") - sum_units(sent, "network_fee")


# --------------------------------------------------------------------------- lots and reserve


@transaction.atomic
def lots_plan(*, actor, entrustment: Entrustment, tranche_caps: dict[int, int] | None = None,
              fee_allowances: dict[int, int] | None = None) -> list[Lot]:
    """Split what is in custody into lots, one asset each, no lot above its tranche cap.

    Lots are planned before the coins go to the platform, so each asset's custody balance
    is sold less an allowance for the network fee of that transfer (what the fee leaves
    over stays in custody and shows as still held). No cap sells each asset in one lot.
    """
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, OFFICER)
    if entrustment.state != EntrustmentState.IN_CUSTODY or entrustment.lots.exists():
        raise DisposalError.wrong_state(entrustment, _("Lots are planned once, after the coins are in custody."))
    caps, allowances = tranche_caps or {}, fee_allowances or {}
    lots, sequence = [], 0
    for asset in Asset.objects.filter(pk__in=entrustment.holdings.values("asset")).order_by("symbol"):
        allowance = allowances.get(asset.pk, 0)
        remaining = custody_balance(entrustment, asset) - allowance
        if allowance < 0 or remaining <= 0:
            raise ValidationError({"fee_allowances": _("%(sym)s: the fee allowance must be between zero and the "
                                                       "custody balance.") % {"sym": asset.symbol}})
        cap = caps.get(asset.pk, remaining)
        if cap <= 0:
            raise ValidationError({"tranche_caps": _("A tranche cap must be positive.")})
        while remaining > 0:
            sequence += 1
            quantity = min(cap, remaining)
            lot = Lot(entrustment=entrustment, asset=asset, sequence=sequence, quantity=quantity)
            save_tracked(lot, actor=actor, reason="planned")
            lots.append(lot)
            remaining -= quantity
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.LOT_TRANSITION, to_state=LotState.PLANNED,
         details={"planned": [[lot.sequence, lot.asset.symbol, str(lot.quantity)] for lot in lots]})
    return lots


def _check_reserve_rule(lot: Lot, price: Decimal, inputs: dict) -> None:
    policy = lot.entrustment.policy
    previous = lot.current_reserve()
    if previous is not None and lot.state == LotState.NO_DEAL:
        floor = (previous.price * (1 - policy.max_reserve_cut)).quantize(Decimal("0.00000001"))
        if price < floor:
            raise ValidationError({"price": _("A new reserve may be cut by at most %(pct)s%% of the previous one "
                                              "(%(prev)s): not below %(floor)s.")
                                   % {"pct": f"{(policy.max_reserve_cut * 100).normalize():f}", "prev": previous.price,
                                      "floor": floor}})
        return
    if not (inputs.get("source") or "").strip():
        raise ValidationError({"inputs": _("Name the source of the reference prices.")})
    if policy.reserve_rule == ReserveRule.REFERENCE_AVERAGE:
        try:
            refs = [Decimal(str(p)) for p in inputs.get("reference_prices", [])]
        except InvalidOperation:
            raise ValidationError({"inputs": _("The reference prices must be numbers.")})
        if len(refs) != policy.reference_days:
            raise ValidationError({"inputs": _("Give the closing prices of the %(n)s trading days before the trade "
                                               "date.") % {"n": policy.reference_days}})
        average = sum(refs) / len(refs)
        if price < average:
            raise ValidationError({"price": _("The reserve may not be below the %(n)s-day average %(avg)s.")
                                   % {"n": policy.reference_days, "avg": average.quantize(Decimal("0.01"))}})
    elif policy.reserve_rule == ReserveRule.VALUATION:
        try:
            valuation = Decimal(str(inputs.get("valuation_price")))
        except InvalidOperation:
            raise ValidationError({"inputs": _("Give the valuation price per coin.")})
        if price != valuation:
            raise ValidationError({"price": _("In the first round the reserve equals the valuation %(v)s.")
                                   % {"v": valuation}})
    elif policy.reserve_rule == ReserveRule.ISSUER_BUYBACK:
        try:
            face = Decimal(str(inputs.get("face_value")))
        except InvalidOperation:
            raise ValidationError({"inputs": _("Give the face value per token.")})
        floor = face * policy.buyback_floor_ratio
        if price < floor:
            raise ValidationError({"price": _("A buy-back price may not be below %(f)s.") % {"f": floor}})


@transaction.atomic
def reserve_propose(*, actor, lot: Lot, price, inputs: dict) -> ReservePrice:
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.bce, OFFICER)
    if lot.state not in (LotState.PLANNED, LotState.NO_DEAL):
        raise DisposalError(_("A reserve is set before the first round or after a round without a deal."))
    if lot.state == LotState.NO_DEAL and not lot.rounds_left():
        raise DisposalError(_("The policy allows no further round after %(n)s failures.")
                            % {"n": entrustment.policy.max_failed_rounds})
    price = parse_money(price, field="price", places=8)
    _check_reserve_rule(lot, price, inputs or {})
    round_no = lot.failed_rounds + 1
    reserve = ReservePrice.objects.filter(lot=lot, round_no=round_no, approved_at__isnull=True).first()
    if reserve is None and ReservePrice.objects.filter(lot=lot, round_no=round_no).exists():
        raise DisposalError(_("The reserve for this round is already approved."))
    reserve = reserve or ReservePrice(lot=lot, round_no=round_no)
    reserve.rule, reserve.price, reserve.currency = entrustment.policy.reserve_rule, price, lot.quote_currency
    reserve.inputs, reserve.proposed_by = inputs, actor
    save_tracked(reserve, actor=actor, reason="reserve proposed")
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.RESERVE_PROPOSED,
         details={"lot": lot.sequence, "round": round_no, "price": str(price), "rule": reserve.rule,
                  "inputs": inputs})
    return reserve


@transaction.atomic
def reserve_approve(*, actor, lot: Lot, reason: str = "") -> Lot:
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.bce, APPROVER)
    reserve = ReservePrice.objects.select_for_update(of=("self",)).filter(
        lot=lot, round_no=lot.failed_rounds + 1, approved_at__isnull=True).first()
    if reserve is None:
        raise DisposalError(_("There is no proposed reserve to approve."))
    content = {"price": str(reserve.price), "inputs": reserve.inputs, "round": reserve.round_no}
    if approvals.approve(entrustment=entrustment, action="reserve", subject=f"reserve:{reserve.pk}",
                         content=content, actor=actor, membership=membership, preparer=reserve.proposed_by):
        reserve.approved_at = timezone.now()
        save_tracked(reserve, actor=actor, reason="reserve approved")
        run_transition(lot, "set_reserve", actor=actor, membership=membership, reason=reason,
                       details={"price": str(reserve.price), "round": reserve.round_no})
        if entrustment.state == EntrustmentState.IN_CUSTODY and entrustment.all_lots_reserved():
            run_transition(entrustment, "set_reserve", actor=actor, membership=membership)
    return lot


# --------------------------------------------------------------------------- transfer to the platform


@transaction.atomic
def platform_transfer_instruct(*, actor, entrustment: Entrustment, platform: Organisation,
                               deposits: list[TransferRecord]) -> list[CoinTransfer]:
    """Instruct custody to deposit at the platform. The reference is the idempotency key:
    custody and the platform see the same one again on any retry."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    if platform.kind != OrgKind.PLATFORM or not platform.is_active:
        raise ValidationError({"platform": _("Choose an active licensed platform.")})
    if not deposits:
        raise ValidationError({"deposits": _("Instruct at least one deposit.")})
    if not entrustment.bond_covers():
        raise DisposalError(_("No coin may move before the performance bond covers the required ratio."))
    attempt = entrustment.transfers.filter(kind=TransferKind.TO_PLATFORM).count() + 1
    for asset in Asset.objects.filter(pk__in=entrustment.lots.values("asset")):
        planned = sum_units(entrustment.lots.filter(asset=asset, parent__isnull=True), "quantity")
        deposited = sum(d.amount for d in deposits if d.asset.pk == asset.pk)
        if deposited < planned:
            raise ValidationError({"deposits": _("%(sym)s: the deposit %(d)s is less than the %(p)s planned for sale.")
                                   % {"sym": asset.symbol, "d": asset.format_amount(deposited),
                                      "p": asset.format_amount(planned)}})
    created = []
    entrustment.platform = platform
    run_transition(entrustment, "instruct_transfer", actor=actor, membership=membership,
                   details={"platform": platform.code})
    for n, d in enumerate(deposits, start=1):
        to_address = _validate_transfer(d, available=custody_balance(entrustment, d.asset))
        # Only to the agency's own deposit address at this platform, approved by BCE and past its cooling period.
        whitelist.require_usable(entrustment.agency, d.asset, to_address, purpose=WhitelistPurpose.PLATFORM_DEPOSIT,
                                 platform=platform)
        transfer = CoinTransfer(entrustment=entrustment, asset=d.asset, kind=TransferKind.TO_PLATFORM,
                                reference=f"{entrustment.number}-P{attempt + n - 1}", from_address=d.from_address,
                                to_address=to_address, amount=d.amount, network_fee=d.network_fee,
                                txid=d.txid.strip(), recorded_by=actor)
        try:
            with transaction.atomic():
                transfer.save()
        except IntegrityError:
            raise DisposalError(_("This transfer was already instructed."))
        created.append(transfer)
        ledger.post_platform_transfer(transfer)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.TRANSFER_RECORDED,
         details={"kind": TransferKind.TO_PLATFORM, "references": [t.reference for t in created]})
    return created


@transaction.atomic
def transfer_record_broadcast(*, actor, transfer: CoinTransfer, txid: str, network_fee: int) -> CoinTransfer:
    """Custody signed and broadcast an instructed deposit: keep its txid and the fee it really paid.

    The fee is only known once custody has built the transaction; it must still fit in what custody holds.
    A second report of the same broadcast changes nothing; a different txid for it is refused.
    """
    entrustment = lock_entrustment(transfer.entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    transfer = CoinTransfer.objects.select_for_update(of=("self",)).get(pk=transfer.pk)
    txid = (txid or "").strip()
    if not txid:
        raise ValidationError({"txid": _("The transaction id is required.")})
    if transfer.txid:
        if transfer.txid != txid:
            raise DisposalError(_("Transfer %(ref)s was already broadcast as %(tx)s.")
                                % {"ref": transfer.reference, "tx": transfer.txid})
        return transfer
    if transfer.status != TransferStatus.INSTRUCTED:
        raise DisposalError(_("Transfer %(ref)s is no longer awaiting broadcast.") % {"ref": transfer.reference})
    if network_fee < 0:
        raise ValidationError({"network_fee": _("A network fee cannot be negative.")})
    available = custody_balance(entrustment, transfer.asset) + transfer.network_fee
    if network_fee > available:
        raise ValidationError({"network_fee": _("%(sym)s: the fee %(fee)s exceeds what custody still holds.")
                               % {"sym": transfer.asset.symbol, "fee": transfer.asset.format_amount(network_fee)}})
    transfer.txid, transfer.network_fee = txid, network_fee
    save_tracked(transfer, actor=actor, reason="broadcast by custody")
    ledger.post_platform_transfer_fee(transfer)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.TRANSFER_RECORDED,
         details={"kind": TransferKind.TO_PLATFORM, "reference": transfer.reference, "txid": txid,
                  "network_fee": str(network_fee)})
    return transfer


@transaction.atomic
def platform_deposit_confirm(*, actor, entrustment: Entrustment, txids: dict[str, str]) -> Entrustment:
    """The platform credited the deposits and cleared AML: the coins are at the platform."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    pending = list(entrustment.transfers.select_for_update(of=("self",)).filter(kind=TransferKind.TO_PLATFORM,
                                                                    status=TransferStatus.INSTRUCTED))
    if not pending:
        raise DisposalError(_("No deposit awaits confirmation."))
    for transfer in pending:
        txid = (txids.get(transfer.reference) or transfer.txid or "").strip()
        if not txid:
            raise ValidationError({"txids": _("The transaction id of %(ref)s is required.")
                                   % {"ref": transfer.reference}})
        transfer.txid, transfer.status = txid, TransferStatus.CONFIRMED
        save_tracked(transfer, actor=actor, reason="deposit credited")
        ledger.post_platform_deposit(transfer)
    run_transition(entrustment, "clear_at_platform", actor=actor, membership=membership,
                   details={"confirmed": [t.reference for t in pending]})
    return entrustment


@transaction.atomic
def platform_aml_hold(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    return transition_with_reason(entrustment, "hold_for_aml", actor=actor, party="agency", roles=(OFFICER,),
                                  reason=reason)


@transaction.atomic
def platform_transfer_fail(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    for transfer in entrustment.transfers.select_for_update(of=("self",)).filter(kind=TransferKind.TO_PLATFORM,
                                                                     status=TransferStatus.INSTRUCTED):
        transfer.status = TransferStatus.FAILED
        save_tracked(transfer, actor=actor, reason=reason)
        ledger.post_transfer_failed(transfer)
    run_transition(entrustment, "fail_transfer", actor=actor, membership=membership, reason=reason)
    return entrustment


# --------------------------------------------------------------------------- inquiry and sale


@transaction.atomic
def inquiry_open(*, actor, lot: Lot) -> InquiryRound:
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.agency, OFFICER)
    if entrustment.state == EntrustmentState.AT_PLATFORM:
        run_transition(entrustment, "start_selling", actor=actor, membership=membership)
    elif entrustment.state != EntrustmentState.SELLING:
        raise DisposalError.wrong_state(entrustment, _("Inquiries open once the coins are at the platform and cleared."))
    reserve = lot.current_reserve()
    if reserve is None:
        raise DisposalError(_("This lot needs an approved reserve price first."))
    run_transition(lot, "open_inquiry", actor=actor, membership=membership)
    number = (lot.rounds.aggregate(n=Max("number"))["n"] or 0) + 1
    inquiry = InquiryRound(lot=lot, number=number, reserve=reserve, opened_by=actor)
    save_tracked(inquiry, actor=actor, reason="inquiry opened")
    return inquiry


@transaction.atomic
def quote_record(*, actor, lot: Lot, platform: Organisation, reference: str, price, quantity: int,
                 quoted_at: datetime, expires_at: datetime) -> Quote:
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.agency, OFFICER)
    if lot.state != LotState.INQUIRY:
        raise DisposalError(_("Quotes are recorded while the inquiry is open."))
    if platform.kind != OrgKind.PLATFORM:
        raise ValidationError({"platform": _("Quotes come from licensed platforms.")})
    price = parse_money(price, field="price", places=8)
    if quantity <= 0:
        raise ValidationError({"quantity": _("The amount must be greater than zero.")})
    if expires_at <= quoted_at:
        raise ValidationError({"expires_at": _("A quote expires after it is given.")})
    if Quote.objects.filter(platform=platform, reference=reference).exists():
        raise ValidationError({"reference": _("This quote is already recorded.")})
    quote = Quote(round=lot.current_round(), platform=platform, reference=reference, price=price,
                  quantity=min(quantity, lot.quantity), quoted_at=quoted_at, expires_at=expires_at,
                  recorded_by=actor)
    save_tracked(quote, actor=actor, reason="quote recorded")
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.QUOTE_RECORDED,
         details={"lot": lot.sequence, "platform": platform.code, "reference": reference, "price": str(price),
                  "quantity": str(quantity), "quoted_at": quoted_at.isoformat(), "expires_at": expires_at.isoformat()})
    return quote


@transaction.atomic
def inquiry_close(*, actor, lot: Lot) -> Lot:
    """Best offer at or above the reserve → award awaiting approval; otherwise no deal."""
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.agency, OFFICER)
    if lot.state != LotState.INQUIRY:
        raise DisposalError(_("There is no open inquiry on this lot."))
    inquiry = InquiryRound.objects.select_for_update(of=("self",)).get(pk=lot.current_round().pk)
    quotes = list(inquiry.quotes.order_by("-price", "quoted_at"))
    inquiry.closed_at = timezone.now()
    best = quotes[0] if quotes else None
    enough = len(quotes) >= entrustment.policy.min_quotes
    summary = {"quotes": len(quotes), "best": str(best.price) if best else None,
               "reserve": str(inquiry.reserve.price), "min_quotes": entrustment.policy.min_quotes}
    if best and enough and best.price >= inquiry.reserve.price:
        inquiry.awarded_quote, inquiry.award_prepared_by = best, actor
        save_tracked(inquiry, actor=actor, reason="award proposed")
        run_transition(lot, "propose_award", actor=actor, membership=membership, details=summary)
    else:
        save_tracked(inquiry, actor=actor, reason="no deal")
        why = _("fewer quotes than the policy requires") if not enough else _("no quote at or above the reserve")
        run_transition(lot, "record_no_deal", actor=actor, membership=membership, reason=why, details=summary)
    return lot


@transaction.atomic
def award_approve(*, actor, lot: Lot, reason: str = "") -> Lot:
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.bce, APPROVER)
    if lot.state != LotState.AWARD_PENDING:
        raise DisposalError(_("There is no award awaiting approval on this lot."))
    inquiry = lot.current_round()
    quote = inquiry.awarded_quote
    content = {"quote": quote.pk, "price": str(quote.price), "quantity": str(quote.quantity),
               "reserve": str(inquiry.reserve.price)}
    if approvals.approve(entrustment=entrustment, action="award", subject=f"round:{inquiry.pk}", content=content,
                         actor=actor, membership=membership, preparer=inquiry.award_prepared_by):
        run_transition(lot, "approve_award", actor=actor, membership=membership, reason=reason, details=content)
    return lot


@transaction.atomic
def lot_suspend(*, actor, lot: Lot, reason: str) -> Lot:
    """Extreme market move or platform halt: stop the round rather than sell."""
    reason = reason_required(reason)
    entrustment, lot = lock_lot(lot)
    try:
        membership = require(actor, entrustment.agency, OFFICER)
    except DisposalError:
        membership = require(actor, entrustment.bce, OFFICER, APPROVER)
    run_transition(lot, "suspend", actor=actor, membership=membership, reason=reason)
    return lot


@transaction.atomic
def execution_fail(*, actor, lot: Lot, reason: str) -> Lot:
    """The awarded order was not carried out and nothing was filled: the lot goes back for a new round (a new
    RFQ, a new award and its approval) under the same reserve. The reason names the venue's answer."""
    reason = reason_required(reason)
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.agency, OFFICER)
    if lot.state != LotState.EXECUTING:
        raise DisposalError(_("The lot is not awarded for execution."))
    # Nothing filled is the transition's own guard (nothing_filled): run_transition refuses with its message.
    run_transition(lot, "fail_execution", actor=actor, membership=membership, reason=reason,
                   details={"round": lot.current_round().number})
    return lot


@dataclass(frozen=True)
class FillRecord:
    trade_id: str
    quantity: int
    price: Decimal
    gross: Decimal
    fee: Decimal
    executed_at: datetime


@transaction.atomic
def execution_record(*, actor, lot: Lot, fills: list[FillRecord]) -> Lot:
    """The platform's trade confirmation. Fewer coins filled than the lot → a remainder lot."""
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.agency, OFFICER)
    if lot.state != LotState.EXECUTING:
        raise DisposalError(_("The lot is not awarded for execution."))
    if not fills:
        raise ValidationError({"fills": _("Record at least one fill.")})
    quote = lot.current_round().awarded_quote
    reserve = lot.current_round().reserve
    total = 0
    for f in fills:
        if f.quantity <= 0 or f.gross <= 0 or f.fee < 0:
            raise ValidationError({"fills": _("Fill %(id)s: quantities and amounts must be positive.")
                                   % {"id": f.trade_id}})
        if f.price < reserve.price:
            raise ValidationError({"fills": _("Fill %(id)s is below the reserve price %(r)s.")
                                   % {"id": f.trade_id, "r": reserve.price}})
        total += f.quantity
        Fill(lot=lot, quote=quote, trade_id=f.trade_id, quantity=f.quantity, price=f.price, gross=f.gross,
             fee=f.fee, currency=lot.quote_currency, executed_at=f.executed_at, recorded_by=actor).save()
    if total > lot.quantity:
        raise ValidationError({"fills": _("The fills exceed the lot's quantity.")})
    ledger.post_fills(lot)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.FILL_RECORDED,
         details={"lot": lot.sequence, "fills": [[f.trade_id, str(f.quantity), str(f.price), str(f.gross),
                                                  str(f.fee)] for f in fills]})
    if total == lot.quantity:
        run_transition(lot, "complete_execution", actor=actor, membership=membership)
    else:
        run_transition(lot, "complete_partially", actor=actor, membership=membership,
                       details={"filled": str(total), "remainder": str(lot.quantity - total)})
        sequence = entrustment.lots.aggregate(n=Max("sequence"))["n"] + 1
        remainder = Lot(entrustment=entrustment, asset=lot.asset, sequence=sequence, quantity=lot.quantity - total,
                        quote_currency=lot.quote_currency, parent=lot, failed_rounds=lot.failed_rounds)
        save_tracked(remainder, actor=actor, reason=f"remainder of lot {lot.sequence}")
    _complete_sale_if_done(entrustment, actor=actor, membership=membership)
    return lot


@transaction.atomic
def lot_exhaust(*, actor, lot: Lot, reason: str) -> Lot:
    """After the last permitted failed round the lot stays unsold (back to the bureau's decision)."""
    reason = reason_required(reason)
    entrustment, lot = lock_lot(lot)
    membership = require(actor, entrustment.bce, APPROVER)
    if lot.state == LotState.NO_DEAL and lot.rounds_left():
        raise DisposalError(_("Rounds remain under the policy: set a new reserve instead."))
    run_transition(lot, "exhaust", actor=actor, membership=membership, reason=reason)
    if entrustment.nothing_sold():
        run_transition(entrustment, "terminate_unsold", actor=actor, membership=membership, reason=reason)
    else:
        _complete_sale_if_done(entrustment, actor=actor, membership=membership)
    return lot


def _complete_sale_if_done(entrustment, *, actor, membership) -> None:
    if entrustment.state == EntrustmentState.SELLING and entrustment.sale_complete():
        run_transition(entrustment, "complete_sale", actor=actor, membership=membership)


# --------------------------------------------------------------------------- exceptions on the entrustment


@transaction.atomic
def entrustment_cancel(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    """The bureau withdraws before any coin has moved; a posted bond is released by the "bond_release" quorum.

    The cancelling approver's decision is the first approval of the release: with the default quorum of one the
    bond is released at once, with more it stays posted until other approvers of the bureau add theirs
    (`bond_release_approve`). The bond secures the bureau's coins, so the bureau's approvers give it up.
    """
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, APPROVER)
    run_transition(entrustment, "cancel", actor=actor, membership=membership, reason=reason)
    _approve_bond_release(entrustment, actor=actor, membership=membership, reason=reason)
    for holding in entrustment.holdings.select_for_update(of=("self",)):
        holding.entrustment = None
        save_tracked(holding, actor=actor, reason=f"released from cancelled {entrustment.number}")
    return entrustment


def _bond_content(entrustment: Entrustment, bond) -> dict:
    """What a release or forfeiture approver decides on: this bond of this agency, in this state of the file."""
    return {"agency": entrustment.agency_id, "bond": bond.reference if bond else None,
            "posted_cny": str(bond.posted_cny) if bond else None, "state": entrustment.state}


def _approve_bond_release(entrustment: Entrustment, *, actor, membership, reason: str = "") -> None:
    bond = entrustment.current_bond()
    if bond is None or bond.state != "posted":
        return
    if approvals.approve(entrustment=entrustment, action="bond_release", subject=f"bond:{bond.pk}",
                         content=_bond_content(entrustment, bond), actor=actor, membership=membership,
                         preparer=None, reason=reason):
        bond.release()
        save_tracked(bond, actor=actor, reason=reason or "bond released")
        emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
             type=EventType.BOND_RELEASED, reason=reason, details={"reference": bond.reference})


@transaction.atomic
def bond_release_approve(*, actor, entrustment: Entrustment, reason: str = "") -> Entrustment:
    """A further approver of the bureau releases the bond of a cancelled entrustment (a quorum above one)."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, APPROVER)
    bond = entrustment.current_bond()
    if entrustment.state != EntrustmentState.CANCELLED or bond is None or bond.state != "posted":
        raise DisposalError(_("There is no bond of a cancelled entrustment awaiting release."))
    _approve_bond_release(entrustment, actor=actor, membership=membership, reason=reason)
    return entrustment


@transaction.atomic
def entrustment_declare_agency_default(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    """The agency failed its duties: its bond is forfeited and BCE may appoint another.

    Forfeiture takes the "bond_forfeit" quorum of BCE approvers: each call records one approval (with its
    reason), and the last one declares the default and forfeits the bond. An approval given while the file
    was in another state no longer counts.
    """
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, APPROVER)
    if not can_proceed(entrustment.declare_agency_default):
        raise DisposalError(_transition_refusal(entrustment, "declare_agency_default"))
    if not approvals.approve(entrustment=entrustment, action="bond_forfeit", subject=f"default:{entrustment.pk}",
                             content=_bond_content(entrustment, entrustment.current_bond()), actor=actor,
                             membership=membership, preparer=None, reason=reason):
        return entrustment
    run_transition(entrustment, "declare_agency_default", actor=actor, membership=membership, reason=reason)
    bond = entrustment.current_bond()
    if bond is not None and bond.state == "posted":
        bond.forfeit()
        save_tracked(bond, actor=actor, reason=reason)
        emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
             type=EventType.BOND_FORFEITED, reason=reason,
             details={"reference": bond.reference, "amount_cny": str(bond.posted_cny)})
    return entrustment


@transaction.atomic
def entrustment_reopen_after_default(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, APPROVER)
    if entrustment.state != EntrustmentState.AGENCY_DEFAULT:
        raise DisposalError.wrong_state(entrustment, _("Only an entrustment whose agency defaulted is reopened for a new agency."))
    Appointment.objects.filter(entrustment=entrustment, is_current=True).update(is_current=False)
    entrustment.agency = None
    run_transition(entrustment, "accept", actor=actor, membership=membership, reason=reason)
    return entrustment


@transaction.atomic
def entrustment_open_dispute(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    try:
        membership = require(actor, entrustment.bureau, APPROVER)
    except DisposalError:
        membership = require(actor, entrustment.bce, APPROVER)
    run_transition(entrustment, "open_dispute", actor=actor, membership=membership, reason=reason)
    return entrustment


@transaction.atomic
def entrustment_resolve_dispute(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    return transition_with_reason(entrustment, "resolve_dispute", actor=actor, party="bce", roles=(APPROVER,),
                                  reason=reason)
