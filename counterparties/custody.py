"""The agency's custody system, as the portal sees it: it instructs and verifies, custody signs.

The portal holds no private key. It asks custody (an HSM/MPC wallet service run by the agency) whether it
controls a seizure address, for the vault address of an asset, and to move coins; custody signs and
broadcasts, and the portal then verifies the transaction on the chain itself (``counterparties.chains``).

Protocol (JSON over HTTPS, ``Authorization: Bearer <token>``), as the local emulator serves it:

* ``GET  /v1/addresses/<chain>/<address>`` → ``{"controlled": bool}``
* ``POST /v1/vault-address`` ``{"chain", "asset", "contract"}`` → ``{"address"}``
* ``POST /v1/transfers`` ``{"reference", "chain", "asset", "contract", "from_address", "to_address",
  "amount", "subtract_fee"}`` → ``{"reference", "txid", "amount", "fee", "status"}``; the reference is the
  idempotency key: the same reference again returns the first answer, with other content it is refused (409).
* ``GET  /v1/transfers/<reference>`` → the same answer, or 404.

Amounts are decimal strings of base units (integers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests

from counterparties.chains.base import AssetRef
from counterparties.errors import ErrorCode, IndeterminateResult, PermanentError, TransientError
from portal.secrets import secret

PARTY = "custody"


@dataclass(frozen=True)
class CustodyTransfer:
    reference: str
    txid: str
    amount: int
    fee: int
    status: str  # "broadcast" | "failed"


class HttpCustody:
    def __init__(self, base_url: str, token: str, *, timeout: tuple[float, float] = (3.05, 15.0)):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.session = requests.Session()

    def __repr__(self):  # never the token
        return f"HttpCustody({self.base_url!r})"

    def _call(self, method: str, path: str, body: dict | None = None, *, mutating: bool = False,
              key: str | None = None) -> dict | None:
        try:
            resp = self.session.request(method, self.base_url + path, timeout=self.timeout,
                                        data=json.dumps(body) if body is not None else None,
                                        headers={"Authorization": f"Bearer {self._token}",
                                                 "Content-Type": "application/json"})
        except requests.ConnectionError as exc:
            if mutating and not isinstance(exc, requests.ConnectTimeout) and "refused" not in str(exc).lower():
                raise IndeterminateResult(f"{path}: the connection broke after sending", party=PARTY,
                                          operation="transfer", idempotency_key=key) from None
            raise TransientError(f"custody unreachable: {type(exc).__name__}", party=PARTY,
                                 code=ErrorCode.CONNECTION) from None
        except requests.Timeout:
            if mutating:
                raise IndeterminateResult(f"{path}: no answer in time", party=PARTY, operation="transfer",
                                          idempotency_key=key) from None
            raise TransientError("custody did not answer in time", party=PARTY, code=ErrorCode.TIMEOUT) from None
        if resp.status_code == 404:
            return None
        if resp.status_code in (401, 403):
            raise PermanentError("custody refused our credentials", party=PARTY, code=ErrorCode.AUTH_FAILED,
                                 http_status=resp.status_code)
        if resp.status_code >= 500:
            if mutating:
                raise IndeterminateResult(f"{path}: HTTP {resp.status_code}", party=PARTY, operation="transfer",
                                          idempotency_key=key, http_status=resp.status_code)
            raise TransientError(f"HTTP {resp.status_code}", party=PARTY, code=ErrorCode.SERVER_ERROR,
                                 http_status=resp.status_code)
        try:
            data = resp.json()
        except ValueError:
            raise PermanentError(f"{path}: custody answered something that is not JSON", party=PARTY,
                                 code=ErrorCode.BAD_RESPONSE, http_status=resp.status_code) from None
        if resp.status_code >= 400:
            code = {409: ErrorCode.REJECTED, 422: ErrorCode.INSUFFICIENT_BALANCE}.get(resp.status_code,
                                                                                     ErrorCode.VALIDATION)
            raise PermanentError(str(data.get("error", "refused"))[:300], party=PARTY, code=code,
                                 http_status=resp.status_code)
        if not isinstance(data, dict):
            raise PermanentError(f"{path}: unexpected answer", party=PARTY, code=ErrorCode.BAD_RESPONSE)
        return data

    def controls(self, asset: AssetRef, address: str) -> bool:
        data = self._call("GET", f"/v1/addresses/{asset.chain}/{address}")
        return bool(data and data.get("controlled") is True)

    def vault_address(self, asset: AssetRef) -> str:
        data = self._call("POST", "/v1/vault-address",
                          {"chain": asset.chain, "asset": asset.symbol, "contract": asset.contract})
        if not data or not isinstance(data.get("address"), str):
            raise PermanentError("custody gave no vault address", party=PARTY, code=ErrorCode.BAD_RESPONSE)
        return data["address"]

    @staticmethod
    def _transfer(data: dict) -> CustodyTransfer:
        try:
            return CustodyTransfer(reference=str(data["reference"]), txid=str(data.get("txid") or ""),
                                   amount=int(str(data["amount"])), fee=int(str(data.get("fee") or 0)),
                                   status=str(data.get("status") or ""))
        except (KeyError, ValueError):
            raise PermanentError("malformed transfer answer from custody", party=PARTY,
                                 code=ErrorCode.BAD_RESPONSE) from None

    def transfer(self, *, reference: str, asset: AssetRef, from_address: str, to_address: str, amount: int,
                 subtract_fee: bool = False) -> CustodyTransfer:
        if not isinstance(amount, int) or amount <= 0:
            raise ValueError("amount must be a positive int of base units")
        data = self._call("POST", "/v1/transfers", {
            "reference": reference, "chain": asset.chain, "asset": asset.symbol, "contract": asset.contract,
            "from_address": from_address, "to_address": to_address, "amount": str(amount),
            "subtract_fee": subtract_fee}, mutating=True, key=reference)
        return self._transfer(data or {})

    def transfer_status(self, reference: str) -> CustodyTransfer | None:
        data = self._call("GET", f"/v1/transfers/{reference}")
        return self._transfer(data) if data is not None else None


def custody_for(agency) -> HttpCustody | None:
    """The agency's custody service: PORTAL_CUSTODY_<CODE>_URL / _TOKEN, else PORTAL_CUSTODY_URL / _TOKEN."""
    code = agency.code.upper().replace("-", "_")
    url = secret(f"PORTAL_CUSTODY_{code}_URL") or secret("PORTAL_CUSTODY_URL")
    token = secret(f"PORTAL_CUSTODY_{code}_TOKEN") or secret("PORTAL_CUSTODY_TOKEN")
    if not url or not token:
        return None
    return HttpCustody(url, token)
