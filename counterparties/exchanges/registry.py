"""Which licensed platform is reachable through which API, configured from the environment or secrets file.

A platform organisation (OrgKind.PLATFORM) with code CODE is enabled for the workers when
``PORTAL_PLATFORM_<CODE>_KIND`` is ``hashkey`` or ``osl`` and ``..._URL``, ``..._API_KEY``, ``..._API_SECRET``
(and for OSL ``..._PASSPHRASE``) are set; CODE is the organisation code upper-cased with ``-`` as ``_``.
Platforms without it are handled by people, as before.
"""

from __future__ import annotations

from counterparties.exchanges.base import ExchangeAdapter, Recorder
from portal.secrets import secret


def _name(platform, field: str) -> str:
    return f"PORTAL_PLATFORM_{platform.code.upper().replace('-', '_')}_{field}"


def is_enabled(platform) -> bool:
    return bool(secret(_name(platform, "KIND")) and secret(_name(platform, "URL")))


def exchange_for(platform, *, recorder: Recorder | None = None) -> ExchangeAdapter | None:
    kind = (secret(_name(platform, "KIND")) or "").lower()
    url = secret(_name(platform, "URL"))
    if not kind or not url:
        return None
    key, api_secret = secret(_name(platform, "API_KEY")) or "", secret(_name(platform, "API_SECRET")) or ""
    if kind == "hashkey":
        from counterparties.exchanges.hashkey import HashKeyExchange

        return HashKeyExchange(url, key, api_secret, recorder=recorder)
    if kind == "osl":
        from counterparties.exchanges.osl import OslExchange

        return OslExchange(url, key, api_secret, secret(_name(platform, "PASSPHRASE")) or "", recorder=recorder)
    raise ValueError(f"{_name(platform, 'KIND')} must be 'hashkey' or 'osl', not {kind!r}")
