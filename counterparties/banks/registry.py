"""Which bank the workers talk to, and where the money goes: configured from the environment or the secrets file.

- ``PORTAL_BANK_URL`` (+ ``PORTAL_BANK_TOKEN``, its bearer token) → the bank's HTTP API (:class:`HttpBank`); otherwise
  ``PORTAL_BANK_DROP_DIR`` → its host-to-host folder (:class:`DropFolderBank`, ``<dir>/inbox`` and
  ``<dir>/outbox``). Neither: no bank is configured and the money steps stay manual. ``PORTAL_BANK_TIMEOUT``:
  seconds to wait for an answer (default 10).
- ``PORTAL_BANK_ORG`` (default ``hk-bank``): the code of the bank's Organisation, named on the offshore
  receipts recorded from its statements.
- ``PORTAL_TREASURY_ACCOUNT`` and ``PORTAL_TREASURY_NAME``: the treasury account the remittance is paid into
  (国库 / 非税收入 collection account). A setting rather than a field on the finance bureau, because it is a
  payment instruction of the treasury's (it changes with the collecting sub-treasury) and no person of the
  portal owns it; without it, an authorised remittance is not paid by the workers and an exception says why.

The account numbers of the parties are on their organisations: an agency's same-name offshore account
(``Organisation.offshore_account_no``) and a bureau's special case-funds account (``special_account_no``).
"""

from __future__ import annotations

from agencies.models import Organisation, OrgKind
from portal.secrets import secret

from .client import BankAdapter, DropFolderBank, HttpBank

DEFAULT_BANK_ORG = "hk-bank"
DEFAULT_TREASURY_NAME = "国家金库北京市分库"


def bank_for() -> BankAdapter | None:
    """The configured bank adapter, or None when none is configured."""
    url = secret("PORTAL_BANK_URL")
    if url:
        return HttpBank(url, secret("PORTAL_BANK_TOKEN") or "", timeout=float(secret("PORTAL_BANK_TIMEOUT", "10")))
    folder = secret("PORTAL_BANK_DROP_DIR")
    if folder:
        return DropFolderBank(f"{folder}/inbox", f"{folder}/outbox")
    return None


def bank_organisation() -> Organisation | None:
    return Organisation.objects.filter(code=secret("PORTAL_BANK_ORG", DEFAULT_BANK_ORG), kind=OrgKind.BANK).first()


def treasury_account() -> tuple[str, str] | None:
    """(account number, account name) of the treasury, or None when not configured."""
    number = secret("PORTAL_TREASURY_ACCOUNT")
    if not number:
        return None
    return number, secret("PORTAL_TREASURY_NAME", DEFAULT_TREASURY_NAME) or DEFAULT_TREASURY_NAME
