"""The agency's address whitelist: where coins may be sent at all.

A custody vault address of the agency, or its deposit address at a licensed platform, enters
the whitelist by a quorum of BCE approvers (BCE supervises the agency; the person who proposed
it never counts) and becomes usable only after the policy's cooling period, so that a wrong or
fraudulent entry can still be revoked before a coin goes to it. `custody_receive` and
`platform_transfer_instruct` refuse any other destination.

Entries belong to an organisation, not to an entrustment. Their record is the entry's own
field history (who, when, why, chained like every history row) and the approval rows; when the
action is taken from an entrustment's page the business event is written on that entrustment too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from agencies.models import Membership, Organisation, OrgKind, Role

from . import approvals
from .addresses import AddressError, validate_address
from .models import Asset, DisposalPolicy, EventType, WhitelistedAddress, WhitelistPurpose, WhitelistState
from .workflow import DisposalError, NotPermitted, emit, reason_required, require, save_tracked

P, W = WhitelistPurpose, WhitelistState


# --------------------------------------------------------------------------- reads


def policy_for(organisation: Organisation) -> DisposalPolicy:
    """The policy in force where the agency works: its quorum and cooling period govern the whitelist."""
    policy = DisposalPolicy.objects.filter(jurisdiction_id=organisation.jurisdiction_id, is_current=True).first()
    if policy is None:
        raise DisposalError(_("No disposal policy is in force for the jurisdiction of %(org)s.")
                            % {"org": organisation.name})
    return policy


def content_of(entry: WhitelistedAddress) -> dict:
    """What an approver approves: whose address, of which asset, for which use (and at which platform)."""
    return {"organisation": entry.organisation_id, "asset": entry.asset_id, "address": entry.address,
            "purpose": entry.purpose, "platform": entry.platform_id}


def subject_of(entry: WhitelistedAddress) -> str:
    return f"whitelist:{entry.pk}"


def live_entry(organisation, asset, address: str, *, purpose: str, platform=None) -> WhitelistedAddress | None:
    entries = WhitelistedAddress.objects.filter(organisation=organisation, asset=asset, address=address,
                                                purpose=purpose).exclude(state=W.REVOKED)
    if purpose == P.PLATFORM_DEPOSIT:
        entries = entries.filter(platform=platform)
    return entries.first()


def unusable_reason(organisation, asset, address: str, *, purpose: str, platform=None,
                    at: datetime | None = None) -> str:
    """Why coins may not go to `address` now, for the person or worker; empty when they may."""
    at = at or timezone.now()
    entry = live_entry(organisation, asset, address, purpose=purpose, platform=platform)
    use = (_("custody vault of %(org)s") % {"org": organisation.name} if purpose == P.CUSTODY
           else _("deposit address of %(org)s at %(platform)s")
           % {"org": organisation.name, "platform": platform.name if platform else "—"})
    if entry is None:
        return _("%(addr)s is not whitelisted as a %(sym)s %(use)s: it is unknown (or revoked). Propose it and have "
                 "it approved first.") % {"addr": address, "sym": asset.symbol, "use": use}
    if entry.state == W.PROPOSED:
        return _("%(addr)s is proposed for the whitelist as a %(sym)s %(use)s but awaits approval.") % {
            "addr": address, "sym": asset.symbol, "use": use}
    if entry.usable_from is None or at < entry.usable_from:
        return _("%(addr)s is whitelisted as a %(sym)s %(use)s but in its cooling period until %(time)s.") % {
            "addr": address, "sym": asset.symbol, "use": use,
            "time": timezone.localtime(entry.usable_from).strftime("%Y-%m-%d %H:%M:%S %Z")}
    return ""


def is_usable(organisation, asset, address: str, *, purpose: str, platform=None) -> bool:
    return not unusable_reason(organisation, asset, address, purpose=purpose, platform=platform)


def require_usable(organisation, asset, address: str, *, purpose: str, platform=None,
                   field: str = "to_address") -> None:
    """Refuse an instruction to an address that is not usable now (the services' check)."""
    reason = unusable_reason(organisation, asset, address, purpose=purpose, platform=platform)
    if reason:
        raise ValidationError({field: reason})


def pending_for(organisation) -> list[WhitelistedAddress]:
    return list(WhitelistedAddress.objects.filter(organisation=organisation, state=W.PROPOSED)
                .select_related("asset", "platform", "proposed_by").order_by("proposed_at", "pk"))


# --------------------------------------------------------------------------- who acts


def _bce_approver(actor, organisation: Organisation, entrustment=None) -> Membership:
    """An approver of the BCE that supervises the agency: the entrustment's, or any BCE of its jurisdiction."""
    if entrustment is not None:
        return require(actor, entrustment.bce, Role.APPROVER)
    membership = (Membership.objects.select_related("organisation")
                  .filter(user=actor, role=Role.APPROVER, is_active=True, organisation__is_active=True,
                          organisation__kind=OrgKind.BCE,
                          organisation__jurisdiction_id=organisation.jurisdiction_id).first()
                  if actor is not None and actor.is_authenticated else None)
    if membership is None:
        raise NotPermitted(_("Only approvers of the equity exchange that supervises %(org)s may approve its "
                             "whitelist.") % {"org": organisation.name})
    return membership


def _context(entrustment, organisation):
    """The entrustment an action was taken from, if any; it must be one the agency works on."""
    if entrustment is not None and entrustment.agency_id != organisation.pk:
        raise ValidationError({"organisation": _("This entrustment's agency is not %(org)s.")
                               % {"org": organisation.name}})
    return entrustment


def _record(entry, *, entrustment, actor, membership, action: str, reason: str = "", extra: dict | None = None):
    if entrustment is None:
        return  # the entry's history row is the record (an event needs a case)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.ADDRESS_WHITELISTED, reason=reason,
         details={"action": action, "entry": entry.pk, "state": entry.state, **content_of(entry),
                  "asset_symbol": entry.asset.symbol, **(extra or {})})


def _lock(entry: WhitelistedAddress) -> WhitelistedAddress:
    return (WhitelistedAddress.objects.select_for_update(of=("self",))
            .select_related("organisation", "asset", "platform").get(pk=entry.pk))


# --------------------------------------------------------------------------- services


@transaction.atomic
def whitelist_propose(*, actor, organisation: Organisation, asset: Asset, address: str, purpose: str,
                      platform: Organisation | None = None, entrustment=None) -> WhitelistedAddress:
    """The agency names an address of its own; proposing a live entry again returns it (idempotent)."""
    membership = require(actor, organisation, Role.OFFICER)
    if organisation.kind != OrgKind.AGENCY:
        raise ValidationError({"organisation": _("Only a service agency keeps an address whitelist.")})
    entrustment = _context(entrustment, organisation)
    if purpose not in P.values:
        raise ValidationError({"purpose": _("Choose what the address is for.")})
    if purpose == P.PLATFORM_DEPOSIT:
        if platform is None or platform.kind != OrgKind.PLATFORM or not platform.is_active:
            raise ValidationError({"platform": _("A deposit address needs an active licensed platform.")})
    elif platform is not None:
        raise ValidationError({"platform": _("A custody vault address belongs to no platform.")})
    if not asset.is_active:
        raise ValidationError({"asset": _("This asset is not enabled for disposal.")})
    try:
        address = validate_address(address, asset.address_format)
    except AddressError as exc:
        raise ValidationError({"address": str(exc)})
    policy_for(organisation)  # no policy, no way to approve it: say so now rather than leave it pending forever
    existing = live_entry(organisation, asset, address, purpose=purpose, platform=platform)
    if existing is not None:
        return existing
    entry = WhitelistedAddress(organisation=organisation, asset=asset, address=address, purpose=purpose,
                               platform=platform, proposed_by=actor)
    try:
        with transaction.atomic():
            save_tracked(entry, actor=actor, reason="proposed")
    except IntegrityError:  # proposed a moment ago by someone else (or a worker's retry): the same entry
        return live_entry(organisation, asset, address, purpose=purpose, platform=platform)
    _record(entry, entrustment=entrustment, actor=actor, membership=membership, action="proposed")
    return entry


@transaction.atomic
def whitelist_approve(*, actor, entry: WhitelistedAddress, entrustment=None) -> WhitelistedAddress:
    """One BCE approver's approval; the entry is approved on the quorum's last one, usable after the cooling."""
    entry = _lock(entry)
    entrustment = _context(entrustment, entry.organisation)
    membership = _bce_approver(actor, entry.organisation, entrustment)
    if entry.state != W.PROPOSED:
        raise DisposalError(_("This address is not awaiting approval (it is “%(state)s”).")
                            % {"state": entry.get_state_display()})
    policy = policy_for(entry.organisation)
    if approvals.approve(entrustment=entrustment, action="whitelist", subject=subject_of(entry),
                         content=content_of(entry), actor=actor, membership=membership,
                         preparer=entry.proposed_by, policy=policy):
        entry.approve()
        entry.approved_at = timezone.now()
        entry.usable_from = entry.approved_at + timedelta(hours=policy.whitelist_cooling_hours)
        save_tracked(entry, actor=actor, reason=f"approved; usable from {entry.usable_from.isoformat()}")
        _record(entry, entrustment=entrustment, actor=actor, membership=membership, action="approved",
                extra={"usable_from": entry.usable_from.isoformat(),
                       "cooling_hours": policy.whitelist_cooling_hours})
    return entry


@transaction.atomic
def whitelist_revoke(*, actor, entry: WhitelistedAddress, reason: str, entrustment=None) -> WhitelistedAddress:
    """Take an address off the whitelist. Either side may: the agency withdrawing its own address, or a BCE
    approver. Revoking only ever stops coins, so no quorum; a new proposal starts afresh."""
    reason = reason_required(reason)
    entry = _lock(entry)
    entrustment = _context(entrustment, entry.organisation)
    try:
        membership = require(actor, entry.organisation, Role.OFFICER, Role.APPROVER)
    except NotPermitted:
        membership = _bce_approver(actor, entry.organisation, entrustment)
    if entry.state == W.REVOKED:
        raise DisposalError(_("This address is already revoked."))
    entry.revoke()
    entry.revoked_at, entry.revoke_reason = timezone.now(), reason
    save_tracked(entry, actor=actor, reason=reason)
    _record(entry, entrustment=entrustment, actor=actor, membership=membership, action="revoked", reason=reason)
    return entry


def approvals_of(entry: WhitelistedAddress) -> int:
    """How many approvals the entry's current content holds (the proposer's never count)."""
    return approvals.count(action="whitelist", subject=subject_of(entry), content=content_of(entry),
                           preparer=entry.proposed_by)

