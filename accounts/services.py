"""Who must use two-factor sign-in, and the steps of enrolment and verification."""

import base64
import hashlib
import hmac
import os

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django_otp import login as otp_login, verify_token
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

from agencies.models import Membership, Role

from .models import SealedTOTPDevice, two_factor_secret

BACKUP_CODE_COUNT = 10


def requires_two_factor(user) -> bool:
    """Staff, every approver, and the officers of organisations that move value (settings)."""
    if not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return Membership.objects.filter(user=user, is_active=True).filter(
        Q(role=Role.APPROVER)
        | Q(role=Role.OFFICER, organisation__kind__in=settings.TWO_FACTOR_OFFICER_ORG_KINDS)
    ).exists()


def confirmed_device(user) -> SealedTOTPDevice | None:
    return SealedTOTPDevice.objects.filter(user=user, confirmed=True).first()


def pending_device(user) -> SealedTOTPDevice:
    """The device being enrolled: the same one on every reload, so the QR code stays valid."""
    device = SealedTOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    return device or SealedTOTPDevice.start_for(user)


def backup_code_digest(code: str) -> str:
    """What is stored for a backup code: a keyed hash, 16 characters to fit django-otp's token column.

    django-otp stores static tokens in clear. A keyed hash (HMAC under a secret the database does
    not hold) keeps a copy of the database from yielding usable codes; 80 bits of it are plenty
    since a guess can only be tried online, throttled.
    """
    normalised = "".join(code.split()).replace("-", "").lower()
    digest = hmac.new(two_factor_secret("backup-code"), normalised.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def _new_backup_code() -> str:
    # 50 random bits as 10 base32 characters, shown in two groups of five.
    raw = base64.b32encode(os.urandom(7)).decode().lower()[:10]
    return f"{raw[:5]}-{raw[5:]}"


def backup_codes_issue(*, user) -> list[str]:
    """Replace the user's backup codes with new ones; the clear codes exist only in the return value."""
    codes = [_new_backup_code() for _ in range(BACKUP_CODE_COUNT)]
    with transaction.atomic():
        device, _ = StaticDevice.objects.select_for_update().get_or_create(
            user=user, name="backup", defaults={"confirmed": True})
        device.token_set.all().delete()
        StaticToken.objects.bulk_create(StaticToken(device=device, token=backup_code_digest(c)) for c in codes)
    return codes


def backup_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user, device__name="backup").count()


def throttled_until(device):
    """When the device accepts the next attempt, or None if it does now (django-otp's throttling)."""
    allowed, info = device.verify_is_allowed()
    return None if allowed else (info or {}).get("locked_until")


def two_factor_verify(*, request, code: str):
    """Check a TOTP code or a backup code; on success mark the session verified. Returns the device or None.

    Each device row is locked while its code is checked (django_otp.verify_token), so a code, or a
    backup code, cannot be accepted twice by two requests at once.
    """
    user = request.user
    code = code.strip()
    device = None
    totp = confirmed_device(user)
    if totp is not None and code.isdigit() and len(code) == totp.digits:
        device = verify_token(user, totp.persistent_id, code)
    elif code:
        backup = StaticDevice.objects.filter(user=user, name="backup").first()
        if backup is not None:
            device = verify_token(user, backup.persistent_id, backup_code_digest(code))
    if device is not None:
        _mark_verified(request, device)
    return device


def totp_enrol_confirm(*, request, device: SealedTOTPDevice, code: str) -> list[str] | None:
    """Confirm a pending device with a code from it; returns the new backup codes, or None if refused."""
    user = request.user
    with transaction.atomic():
        locked = SealedTOTPDevice.objects.select_for_update().filter(pk=device.pk, user=user, confirmed=False).first()
        if locked is None or not code.strip().isdigit() or not locked.verify_token(code.strip()):
            return None
        locked.confirmed = True
        locked.save(update_fields=["confirmed"])
        # Any other device of the user (an abandoned enrolment) goes.
        SealedTOTPDevice.objects.filter(user=user).exclude(pk=locked.pk).delete()
        codes = backup_codes_issue(user=user)
    _mark_verified(request, locked)
    return codes


def two_factor_reset(*, user) -> int:
    """Remove every OTP device of a user (lost phone): the next sign-in enrols again."""
    deleted = SealedTOTPDevice.objects.filter(user=user).delete()[0]
    deleted += StaticDevice.objects.filter(user=user).delete()[0]
    return deleted


def _mark_verified(request, device) -> None:
    otp_login(request, device)
    # The session gains a privilege: give it a new key, as Django does at password sign-in.
    request.session.cycle_key()
