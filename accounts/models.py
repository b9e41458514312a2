"""The TOTP device, with its key sealed at rest.

django-otp keeps a TOTP key as hex in the database; anyone holding a copy of the database (a
backup, a replica) could then compute every user's codes. This proxy keeps the same table and
verification logic but stores the key encrypted (AES-GCM) under a key the database does not hold
(`TWO_FACTOR_SECRET`, by default derived from `SECRET_KEY`).

Because it is a proxy, django-otp's `devices_for_user()` also lists the same row as a plain
`TOTPDevice`, whose `bin_key` cannot read a sealed key: the portal never uses that helper.
"""

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.utils.crypto import salted_hmac
from django_otp.plugins.otp_totp.models import TOTPDevice

SEAL_PREFIX = "v1:"
KEY_BYTES = 20  # 160 bits, the RFC 4226 recommendation and django-otp's default


def two_factor_secret(purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the configured secret."""
    secret = settings.TWO_FACTOR_SECRET or settings.SECRET_KEY
    return salted_hmac("accounts.two-factor", purpose, secret=secret, algorithm="sha256").digest()


def _aad(user_id: int) -> bytes:
    # Bound to its user: a sealed key copied onto another user's row does not open.
    return f"totp-key:{user_id}".encode()


def seal_key(raw: bytes, user_id: int) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(two_factor_secret("totp-seal")).encrypt(nonce, raw, _aad(user_id))
    return SEAL_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal_key(value: str, user_id: int) -> bytes:
    if not value.startswith(SEAL_PREFIX):
        raise ValueError("not a sealed TOTP key")
    blob = base64.urlsafe_b64decode(value[len(SEAL_PREFIX):])
    return AESGCM(two_factor_secret("totp-seal")).decrypt(blob[:12], blob[12:], _aad(user_id))


class SealedTOTPDevice(TOTPDevice):
    class Meta:
        proxy = True
        verbose_name = "TOTP device"

    @classmethod
    def start_for(cls, user) -> "SealedTOTPDevice":
        """A new, unconfirmed device with a fresh random key."""
        return cls.objects.create(user=user, name="authenticator", confirmed=False,
                                  key=seal_key(os.urandom(KEY_BYTES), user.pk))

    @property
    def bin_key(self) -> bytes:
        return unseal_key(self.key, self.user_id)
