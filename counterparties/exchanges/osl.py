"""OSL (Hong Kong, SFC-licensed) adapter: RFQ quote → trade, trade status, deposits, withdrawals.

Authentication follows OSL's institutional API
(https://docs.institutional.osl.com/docs/authentication-and-signature): headers ``ACCESS-KEY``,
``ACCESS-TIMESTAMP`` (Unix ms), ``ACCESS-PASSPHRASE`` and ``ACCESS-SIGN`` = Base64(HMAC-SHA256(secret,
timestamp + METHOD + request_path + query_string + body)), where query_string keeps its leading ``?`` and
body is the raw JSON sent (empty for GET) — see :func:`osl_signature`.

The RFQ flow is OSL's quote → trade (https://osl.com/reference/get-quote and
https://osl.com/reference/execute-trade): a quote request answers with a ``responseCode`` (``FULL_QUOTE``,
``CANNOT_PRICE``, ``EXCHANGE_RATES_CONVERSION_ERROR``, ``PER_TXN_LIMIT_EXCEEDED``,
``USER_DAILY_LIMIT_EXCEEDED``, ``DEALER_DAILY_LIMIT_EXCEEDED``); executing it answers ``EXECUTED``,
``QUOTE_EXPIRED``, ``INVALID_QUOTE_ID``, ``INSUFFICIENT_FUND`` or ``DAILY_LIMIT_EXCEEDED``, and an executed
order reports ``orderStatus`` ``SUCCESS``, ``INDETERMINATE`` or ``FAILED`` with the client's
``clientRequestId`` (https://osl.com/reference/subscribe-to-order-channel). Request bodies carry ``tonce``
(Unix µs) as those pages say.

Paths marked "(path assumed)" in ``PATHS`` were not on the pages read; the trade query by client id and the
wallet calls follow the same conventions and are constants to correct against the sandbox. The envelope of
errors outside the documented ``responseCode`` tables — ``{"resultCode": "FAILURE", "errorCode": ...,
"message": ...}`` with the HTTP status — is the emulator's convention, read by :func:`classify_error`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from counterparties.errors import CounterpartyError, ErrorCode, IndeterminateResult, PermanentError, TransientError
from counterparties.exchanges.base import (
    Deposit,
    DepositStatus,
    Fill,
    Order,
    OrderStatus,
    Quote,
    Recorder,
    Response,
    Side,
    SignedHttpClient,
    Withdrawal,
    WithdrawalStatus,
    parse_symbol,
    parse_venue_time,
    to_base_units,
    to_decimal_string,
    venue_decimal,
)

PATHS: dict[str, tuple[str, str]] = {
    "quote": ("POST", "/api/3/retail/quote"),  # reference/get-quote
    "trade": ("POST", "/api/3/retail/trade"),  # reference/execute-trade
    "trade_query": ("GET", "/api/3/retail/trade"),  # (path assumed) by clientRequestId
    "deposit_address": ("GET", "/api/3/wallet/deposit-address"),  # (path assumed)
    "deposits": ("GET", "/api/3/wallet/deposits"),  # (path assumed)
    "withdraw": ("POST", "/api/3/wallet/withdraw"),  # (path assumed)
}

NETWORKS = {"bitcoin": "BTC", "litecoin": "LTC", "ethereum": "ETH", "tron": "TRX"}

QUOTE_CODES: dict[str, tuple[type[CounterpartyError], ErrorCode]] = {
    "CANNOT_PRICE": (TransientError, ErrorCode.CANNOT_PRICE),
    "EXCHANGE_RATES_CONVERSION_ERROR": (TransientError, ErrorCode.CANNOT_PRICE),
    "PER_TXN_LIMIT_EXCEEDED": (PermanentError, ErrorCode.LIMIT_EXCEEDED),
    "USER_DAILY_LIMIT_EXCEEDED": (PermanentError, ErrorCode.LIMIT_EXCEEDED),
    "DEALER_DAILY_LIMIT_EXCEEDED": (PermanentError, ErrorCode.LIMIT_EXCEEDED),
}
TRADE_CODES: dict[str, tuple[type[CounterpartyError], ErrorCode]] = {
    "QUOTE_EXPIRED": (PermanentError, ErrorCode.QUOTE_EXPIRED),
    "INVALID_QUOTE_ID": (PermanentError, ErrorCode.INVALID_QUOTE),
    "INSUFFICIENT_FUND": (PermanentError, ErrorCode.INSUFFICIENT_BALANCE),
    "DAILY_LIMIT_EXCEEDED": (PermanentError, ErrorCode.LIMIT_EXCEEDED),
}
ORDER_STATUS = {
    "SUCCESS": (OrderStatus.FILLED, True),
    "PARTIALLY_FILLED": (OrderStatus.PARTIALLY_FILLED, True),  # OSL RFQ: the rest is not filled later
    "PENDING": (OrderStatus.PENDING, False),
    "FAILED": (OrderStatus.FAILED, True),
}
DEPOSIT_STATUS = {
    "COMPLETED": DepositStatus.CREDITED,
    "CREDITED": DepositStatus.CREDITED,
    "PENDING": DepositStatus.PENDING,
    "CONFIRMING": DepositStatus.PENDING,
    # OSL asks for a deposit declaration / wallet verification before crediting a new sender address.
    "PENDING_DECLARATION": DepositStatus.HELD_UNVERIFIED,
    "HELD": DepositStatus.HELD_UNVERIFIED,
    "UNDER_REVIEW": DepositStatus.HELD_UNVERIFIED,
    "REJECTED": DepositStatus.REJECTED,
    "RETURNED": DepositStatus.REJECTED,
}


def osl_signature(secret: str, timestamp: str | int, method: str, request_path: str, body: str = "",
                  query_string: str = "") -> str:
    """Base64 HMAC-SHA256 of ``timestamp + METHOD + request_path + query_string + body``.

    ``query_string`` is '' or starts with '?'; ``body`` is the exact JSON text sent ('' for GET).
    """
    if query_string and not query_string.startswith("?"):
        query_string = "?" + query_string
    prehash = f"{timestamp}{method.upper()}{request_path}{query_string}{body}"
    digest = hmac.new(secret.encode("utf-8"), prehash.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def classify_error(code: str, *, http_status: int, mutating: bool) -> tuple[type[CounterpartyError], ErrorCode]:
    code = code.upper()
    if code in TRADE_CODES:
        return TRADE_CODES[code]
    if code in QUOTE_CODES:
        return QUOTE_CODES[code]
    if http_status == 429 or code in {"RATE_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS"}:
        return TransientError, ErrorCode.RATE_LIMITED
    if code in {"INVALID_SIGNATURE", "SIGNATURE_MISMATCH"}:
        return PermanentError, ErrorCode.BAD_SIGNATURE
    if code in {"TIMESTAMP_EXPIRED", "INVALID_TIMESTAMP"}:
        return TransientError, ErrorCode.TIMESTAMP_OUT_OF_WINDOW
    if code in {"INVALID_API_KEY", "INVALID_PASSPHRASE", "UNAUTHORIZED"} or http_status == 401:
        return PermanentError, ErrorCode.AUTH_FAILED
    if code in {"FORBIDDEN", "PERMISSION_DENIED", "IP_NOT_ALLOWED"} or http_status == 403:
        return PermanentError, ErrorCode.PERMISSION_DENIED
    if code in {"TRADE_NOT_FOUND", "NOT_FOUND"} or http_status == 404:
        return PermanentError, ErrorCode.UNKNOWN_ORDER
    if code == "ADDRESS_NOT_WHITELISTED":
        return PermanentError, ErrorCode.ADDRESS_NOT_WHITELISTED
    if http_status >= 500:
        return (IndeterminateResult if mutating else TransientError), ErrorCode.SERVER_ERROR
    if code in {"VALIDATION_ERROR", "INVALID_PARAMETER"} or http_status == 400:
        return PermanentError, ErrorCode.VALIDATION
    return PermanentError, ErrorCode.REJECTED


def _dec(value: Any) -> Decimal:
    return venue_decimal(value, party="osl")


class OslExchange(SignedHttpClient):
    """OSL adapter. Key, secret and passphrase are passed in (the portal reads them from the environment)."""

    party = "osl"
    SECRET_HEADERS = frozenset({"ACCESS-KEY", "ACCESS-SIGN", "ACCESS-PASSPHRASE"})

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        passphrase: str,
        *,
        recorder: Recorder | None = None,
        timeout: tuple[float, float] = (3.05, 15.0),
        session=None,
        asset_decimals=None,
        clock=time.time,
    ) -> None:
        super().__init__(base_url, recorder=recorder, timeout=timeout, session=session,
                         asset_decimals=asset_decimals)
        if not api_key or not api_secret or not passphrase:
            raise ValueError("OSL API key, secret and passphrase are required")
        self._api_key = api_key
        self._api_secret = api_secret
        self._passphrase = passphrase
        self._scrub_values = (api_key, api_secret, passphrase)
        self._clock = clock

    # -- signed transport --

    def _call(self, operation: str, *, query: list[tuple[str, Any]] | None = None, payload: dict | None = None,
              mutating: bool, idempotency_key: str | None = None) -> Response:
        method, path = PATHS[operation]
        query_string = urlencode([(k, str(v)) for k, v in (query or []) if v is not None])
        if payload is not None:
            payload = {"tonce": int(self._clock() * 1_000_000), **payload}
        body = json.dumps(payload, separators=(",", ":")) if payload is not None else ""
        timestamp = str(int(self._clock() * 1000))
        request_path = self._path_prefix() + path
        signature = osl_signature(self._api_secret, timestamp, method, request_path, body,
                                  f"?{query_string}" if query_string else "")
        headers = {
            "ACCESS-KEY": self._api_key,
            "ACCESS-SIGN": signature,
            "ACCESS-TIMESTAMP": timestamp,
            "ACCESS-PASSPHRASE": self._passphrase,
            "Content-Type": "application/json",
        }
        return self._request(operation=operation, method=method, path=path, query=query_string, body=body,
                             headers=headers, mutating=mutating, idempotency_key=idempotency_key,
                             secrets=(signature,))

    def _path_prefix(self) -> str:
        # The signed request_path is the URL path as sent, including any prefix in base_url.
        from urllib.parse import urlsplit

        return urlsplit(self.base_url).path.rstrip("/")

    def _raise_for_venue_error(self, response: Response, *, operation: str, mutating: bool,
                               idempotency_key: str | None) -> None:
        data = response.data
        if not isinstance(data, dict) or data.get("resultCode", "OK") == "OK":
            return
        code = str(data.get("errorCode") or "FAILURE")
        cls, portal_code = classify_error(code, http_status=response.status, mutating=mutating)
        extra = {"operation": operation, "idempotency_key": idempotency_key} if cls is IndeterminateResult else {}
        raise self._error(cls, str(data.get("message") or code), portal_code, venue_code=code, response=response,
                          **extra)

    # -- RFQ --

    def request_quote(self, symbol: str, side: str, quantity_base_units: int, decimals: int,
                      client_ref: str) -> Quote:
        """One firm quote from OSL's dealing desk. Quote requests have no side effect at OSL."""
        base, quote_ccy = parse_symbol(symbol)
        side = Side(side)
        decimals = self.decimals_for(base, decimals)
        data = self._call("quote", payload={"quoteRequest": {
            "buyTradedCurrency": side == Side.BUY,
            "tradedCurrency": base,
            "settlementCurrency": quote_ccy,
            "tradedCurrencyAmount": to_decimal_string(quantity_base_units, decimals),
        }}, mutating=False, idempotency_key=client_ref).data
        quote = data.get("quoteResponse") or {}
        code = str(quote.get("responseCode", ""))
        if code != "FULL_QUOTE":
            cls, portal_code = QUOTE_CODES.get(code, (PermanentError, ErrorCode.REJECTED))
            raise cls(f"quote refused: {code}", party=self.party, code=portal_code, venue_code=code)
        return Quote(
            party=self.party, quote_id=str(quote["quoteId"]), symbol=symbol, side=side,
            price=Decimal(str(quote["rate"])),
            quantity=to_base_units(quote["tradedCurrencyAmount"], decimals),
            expires_at=parse_venue_time(quote["quoteExpiryTime"]),
            quoted_at=(parse_venue_time(quote["quoteCreatedTime"]) if quote.get("quoteCreatedTime")
                       else datetime.now(UTC)),
            provider=quote.get("liquidityProvider"), raw=dict(quote),
        )

    def request_quotes(self, symbol: str, side: str, quantity_base_units: int, decimals: int,
                       client_ref: str) -> list[Quote]:
        return [self.request_quote(symbol, side, quantity_base_units, decimals, client_ref)]

    def accept_quote(self, quote_id: str, client_order_id: str) -> Order:
        """Execute the quote; OSL treats a repeated ``clientRequestId`` as the same trade."""
        data = self._call("trade", payload={"tradeRequest": {"quoteId": quote_id, "clientRequestId": client_order_id}},
                          mutating=True, idempotency_key=client_order_id).data
        trade = data.get("tradeResponse") or {}
        code = str(trade.get("responseCode", ""))
        if code != "EXECUTED":
            cls, portal_code = TRADE_CODES.get(code, (PermanentError, ErrorCode.REJECTED))
            raise cls(f"trade refused: {code}", party=self.party, code=portal_code, venue_code=code)
        if str(trade.get("orderStatus")) == "INDETERMINATE":
            raise IndeterminateResult("OSL reports the execution as INDETERMINATE", party=self.party,
                                      operation="trade", idempotency_key=client_order_id, venue_code="INDETERMINATE")
        return self._order(trade, client_order_id)

    def decline_quote(self, quote_id: str) -> None:
        """OSL quotes bind nobody until executed: letting one lapse is the decline."""
        return None

    def order_status(self, client_order_id: str) -> Order:
        data = self._call("trade_query", query=[("clientRequestId", client_order_id)], mutating=False).data
        trade = data.get("trade") or {}
        if str(trade.get("orderStatus")) == "INDETERMINATE":
            return self._order({**trade, "orderStatus": "PENDING"}, client_order_id)
        return self._order(trade, client_order_id)

    def _order(self, trade: dict, client_order_id: str) -> Order:
        base = str(trade.get("tradedCurrency", ""))
        decimals = self.decimals_for(base)
        status, final = ORDER_STATUS.get(str(trade.get("orderStatus", "")).upper(), (OrderStatus.PENDING, False))
        fills = tuple(
            Fill(trade_id=str(f["fillId"]), quantity=to_base_units(f["quantity"], decimals), price=_dec(f["price"]),
                 gross=_dec(f["settlementAmount"]), fee=_dec(f.get("fee", 0)),
                 fee_currency=str(f.get("feeCurrency", "")), executed_at=parse_venue_time(f["timestamp"]))
            for f in trade.get("fills", [])
        )
        filled = to_base_units(trade.get("filledQuantity") or "0", decimals)
        return Order(
            party=self.party, client_order_id=client_order_id, status=status,
            requested_base_units=to_base_units(trade.get("tradedCurrencyAmount") or "0", decimals),
            filled_base_units=filled, avg_price=_dec(trade.get("averagePrice")) or None,
            fees=_dec(trade.get("feeAmount") or 0), fee_currency=trade.get("feeCurrency") or None,
            fills=fills, final=final, order_id=str(trade.get("tradeId") or "") or None, raw=dict(trade),
        )

    # -- deposits and withdrawals --

    def deposit_address(self, asset: str, chain: str) -> str:
        data = self._call("deposit_address", query=[("currency", asset.upper()),
                                                     ("network", NETWORKS.get(chain, chain))], mutating=False).data
        return str(data["data"]["address"])

    def deposit_status(self, txid: str) -> Deposit:
        data = self._call("deposits", query=[("txId", txid)], mutating=False).data
        for row in data.get("data", []):
            if str(row.get("txId", "")).lower() == txid.lower():
                status = str(row.get("status", "")).upper()
                return Deposit(party=self.party, txid=txid, asset=str(row.get("currency", "")),
                               status=DEPOSIT_STATUS.get(status, DepositStatus.PENDING), amount=_dec(row.get("amount")),
                               venue_status=status, reason=str(row.get("reason") or ""), raw=dict(row))
        return Deposit(party=self.party, txid=txid, asset="", status=DepositStatus.PENDING, amount=Decimal(0),
                       venue_status="NOT_SEEN")

    def withdraw(self, asset: str, chain: str, address: str, amount: int, client_ref: str) -> Withdrawal:
        decimals = self.decimals_for(asset)
        data = self._call("withdraw", payload={
            "clientWithdrawId": client_ref, "currency": asset.upper(), "network": NETWORKS.get(chain, chain),
            "address": address, "amount": to_decimal_string(amount, decimals),
        }, mutating=True, idempotency_key=client_ref).data
        row = data.get("data") or {}
        status = {"COMPLETED": WithdrawalStatus.COMPLETED, "FAILED": WithdrawalStatus.FAILED}.get(
            str(row.get("status", "")).upper(), WithdrawalStatus.PENDING)
        return Withdrawal(party=self.party, client_ref=client_ref, withdrawal_id=str(row.get("withdrawalId")),
                          status=status, amount_base_units=amount, raw=dict(row))
