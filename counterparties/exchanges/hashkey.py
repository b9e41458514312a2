"""HashKey Exchange (Hong Kong, SFC-licensed) adapter: Market Place RFQ, spot order query, deposits, withdrawals.

From HashKey's published API (https://hashkeypro-apidoc.readme.io/reference/authentication-1 and the pages
named next to each call below):

* every private call carries the API key in the ``X-HK-APIKEY`` header and the parameters ``timestamp``
  (ms) and ``recvWindow``; ``signature`` is the hex HMAC-SHA256, keyed with the API secret, of
  *totalParams* = the query string followed by the request body (:func:`hashkey_signature`);
* parameters travel in the query string (the documented samples send form-encoded parameters), so the
  body is empty and totalParams is the query string without ``signature``;
* errors come back as ``{"code": "...", "msg": "..."}`` with codes from
  https://hashkeypro-apidoc.readme.io/reference/error-codes (mapped in :func:`classify_error`).

Market Place RFQ (https://hashkeypro-apidoc.readme.io/reference/202601): the client creates an RFQ
(``rfqClOrderId``, ``buyCcy``/``sellCcy``, ``sellAmount``, ``rfqMode``, ``expireSec`` — create-rfq page),
liquidity providers answer with quotes that carry an ``expireTime`` (pushed on the ``quotes`` stream; this
adapter polls them), and the client accepts or declines one (``quoteId``, ``rfqId``, ``action`` —
accept-quote page). RFQ statuses (new, accepted, processing, successful, expired, ...) come from the RFQ
history (get-rfq-history page). The portal's idempotency key for the trade is the RFQ's ``rfqClOrderId``:
one RFQ can be executed at most once, so ``accept_quote`` and ``order_status`` take the ``client_ref``
that created the RFQ.

Paths marked "(path assumed)" in ``PATHS`` were not printed on the pages read (only the page slugs were);
they are constants so they can be corrected against the sandbox without touching the logic. The emulator
in ``emulators.exchange`` serves exactly these paths.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
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
    best_first,
    parse_symbol,
    parse_venue_time,
    to_base_units,
    to_decimal_string,
    venue_decimal,
)

PATHS: dict[str, tuple[str, str]] = {
    "create_rfq": ("POST", "/api/v1/market-place/create-rfq"),  # (path assumed) reference/create-rfq
    "list_quotes": ("GET", "/api/v1/market-place/get-quotes"),  # (path assumed) quotes also pushed on WS
    # The accept-quote page labels this call GET; we send POST (same signed parameters) so no proxy or
    # cache can ever replay an acceptance. The emulator accepts both.
    "accept_quote": ("POST", "/api/v1/market-place/accept-quote"),
    "rfq_history": ("GET", "/api/v1/market-place/get-rfq-history"),  # (path assumed) reference/get-rfq-history
    "spot_order": ("GET", "/api/v1/spot/order"),  # reference/query-order
    "account_trades": ("GET", "/api/v1/account/trades"),
    "deposit_address": ("GET", "/api/v1/account/deposit/address"),
    "deposit_orders": ("GET", "/api/v1/account/depositOrders"),  # reference/get-deposit-history
    "withdraw": ("POST", "/api/v1/account/withdraw"),
}

# Portal chain names → HashKey chainType.
CHAIN_TYPES = {"bitcoin": "BTC", "litecoin": "LTC", "ethereum": "ETH", "tron": "TRON"}

# Deposit order statuses (reference/get-deposit-history; 2 and 10 appear on HashKey Global's page).
DEPOSIT_STATUS: dict[int, DepositStatus] = {
    1: DepositStatus.HELD_UNVERIFIED,  # pending address authentication
    2: DepositStatus.PENDING,  # under review
    3: DepositStatus.REJECTED,  # deposit failed
    4: DepositStatus.CREDITED,  # deposit successful
    5: DepositStatus.REJECTED,  # refunding
    6: DepositStatus.REJECTED,  # refund completed
    7: DepositStatus.REJECTED,  # refund failed (coins neither credited nor back: a person must act)
    8: DepositStatus.PENDING,  # being credited to the account
    9: DepositStatus.HELD_UNVERIFIED,  # first address verification of a personal wallet failed
    10: DepositStatus.PENDING,  # internal failure (rare), still with the venue
    12: DepositStatus.PENDING,  # deposit processing
}

# RFQ statuses in which no quote has been executed (get-rfq-history page).
RFQ_NOT_EXECUTED = {"new", "expired", "cancelled", "declined", "failed", "manual-order",
                    "manual-order-confirmation"}
RFQ_IN_FLIGHT = {"accepted", "confirmation-pending", "processing"}

SPOT_STATUS = {
    "NEW": (OrderStatus.PENDING, False),
    "PARTIALLY_FILLED": (OrderStatus.PARTIALLY_FILLED, False),
    "FILLED": (OrderStatus.FILLED, True),
    "PARTIALLY_CANCELED": (OrderStatus.PARTIALLY_FILLED, True),
    "CANCELED": (OrderStatus.FAILED, True),
    "REJECTED": (OrderStatus.FAILED, True),
}


def hashkey_signature(secret: str, query_string: str, body: str = "") -> str:
    """Hex HMAC-SHA256 of totalParams (query string + body), keyed with the API secret."""
    total_params = query_string + body
    return hmac.new(secret.encode("utf-8"), total_params.encode("utf-8"), hashlib.sha256).hexdigest()


def classify_error(code: str, msg: str, *, http_status: int,
                   mutating: bool) -> tuple[type[CounterpartyError], ErrorCode]:
    """HashKey error code and message → (error class, portal code).

    Codes from the error-codes page; -1003/-1006/-1007/-1021/-1022 are the Binance-lineage codes HashKey's
    numbering follows (the page excerpt read stops at -1006). RFQ refusals (expired quote, RFQ already
    executed) have no code of their own on the pages read: they come as a request error with a message,
    hence the message checks.
    """
    m = msg.lower()
    if code in {"0003", "-1003"} or http_status == 429:
        return TransientError, ErrorCode.RATE_LIMITED
    if code == "-1022" or "signature" in m:
        return PermanentError, ErrorCode.BAD_SIGNATURE
    if code == "-1021" or "recvwindow" in m:
        return TransientError, ErrorCode.TIMESTAMP_OUT_OF_WINDOW
    if code in {"0102", "0103", "-1002"}:
        return PermanentError, ErrorCode.AUTH_FAILED
    if code in {"0104", "0202", "-1005"}:
        return PermanentError, ErrorCode.PERMISSION_DENIED
    if code in {"-1006", "-1007", "-1000"}:  # execution status unknown
        return (IndeterminateResult if mutating else TransientError), ErrorCode.INDETERMINATE
    if code == "-1001":  # "unable to process your request, please try again": not processed
        return TransientError, ErrorCode.SERVER_ERROR
    if code == "0211" or "not found" in m or "not exist" in m:
        return PermanentError, ErrorCode.UNKNOWN_ORDER
    if code == "0401" or "insufficient" in m:
        return PermanentError, ErrorCode.INSUFFICIENT_BALANCE
    if "expire" in m:
        return PermanentError, ErrorCode.QUOTE_EXPIRED
    if "invalid quote" in m:
        return PermanentError, ErrorCode.INVALID_QUOTE
    if "already" in m:
        return PermanentError, ErrorCode.RFQ_CLOSED
    if "whitelist" in m:
        return PermanentError, ErrorCode.ADDRESS_NOT_WHITELISTED
    if code in {"0001", "0201", "0206", "0207", "0209", "0210", "-1004"}:
        return PermanentError, ErrorCode.VALIDATION
    return PermanentError, ErrorCode.REJECTED


def _dec(value: Any) -> Decimal:
    return venue_decimal(value, party="hashkey")


class HashKeyExchange(SignedHttpClient):
    """HashKey Exchange adapter. Credentials are passed in (the portal reads them from the environment)."""

    party = "hashkey"
    SECRET_HEADERS = frozenset({"X-HK-APIKEY"})
    SECRET_QUERY_PARAMS = frozenset({"signature"})

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        recorder: Recorder | None = None,
        timeout: tuple[float, float] = (3.05, 15.0),
        recv_window: int = 5000,
        rfq_expire_sec: int = 600,
        quote_wait: float = 5.0,
        poll_interval: float = 0.25,
        min_quotes: int = 3,
        session=None,
        asset_decimals=None,
        clock=time.time,
    ) -> None:
        super().__init__(base_url, recorder=recorder, timeout=timeout, session=session,
                         asset_decimals=asset_decimals)
        if not api_key or not api_secret:
            raise ValueError("HashKey API key and secret are required")
        self._api_key = api_key
        self._api_secret = api_secret
        self._scrub_values = (api_key, api_secret)
        self.recv_window = recv_window
        self.rfq_expire_sec = rfq_expire_sec
        self.quote_wait = quote_wait
        self.poll_interval = poll_interval
        self.min_quotes = min_quotes
        self._clock = clock

    # -- signed transport --

    def _call(self, operation: str, params: list[tuple[str, Any]], *, mutating: bool,
              idempotency_key: str | None = None) -> Response:
        method, path = PATHS[operation]
        pairs = [(k, str(v)) for k, v in params if v is not None]
        pairs += [("timestamp", str(int(self._clock() * 1000))), ("recvWindow", str(self.recv_window))]
        query = urlencode(pairs)
        signature = hashkey_signature(self._api_secret, query, "")
        headers = {"X-HK-APIKEY": self._api_key, "Content-Type": "application/x-www-form-urlencoded"}
        return self._request(operation=operation, method=method, path=path, query=f"{query}&signature={signature}",
                             headers=headers, mutating=mutating, idempotency_key=idempotency_key,
                             secrets=(signature,))

    def _raise_for_venue_error(self, response: Response, *, operation: str, mutating: bool,
                               idempotency_key: str | None) -> None:
        data = response.data
        if not (isinstance(data, dict) and "code" in data and "msg" in data):
            return
        code = str(data["code"])
        if code in {"0", "0000", "200"} and response.status < 400:
            return
        cls, portal_code = classify_error(code, str(data.get("msg", "")), http_status=response.status,
                                          mutating=mutating)
        extra = {"operation": operation, "idempotency_key": idempotency_key} if cls is IndeterminateResult else {}
        raise self._error(cls, str(data.get("msg", "")), portal_code, venue_code=code, response=response, **extra)

    # -- RFQ --

    def request_quotes(self, symbol: str, side: str, quantity_base_units: int, decimals: int,
                       client_ref: str) -> list[Quote]:
        """Create an RFQ (idempotent on ``client_ref``) and collect the providers' live quotes, best first.

        Creating the RFQ is the only call here that changes anything at the venue; if it ends in
        ``IndeterminateResult``, call again with the same ``client_ref``: the venue returns the same RFQ.
        """
        base, quote_ccy = parse_symbol(symbol)
        side = Side(side)
        decimals = self.decimals_for(base, decimals)
        amount = to_decimal_string(quantity_base_units, decimals)
        if side == Side.SELL:
            legs = [("buyCcy", quote_ccy), ("sellCcy", base), ("sellAmount", amount)]
        else:
            legs = [("buyCcy", base), ("sellCcy", quote_ccy), ("buyAmount", amount)]
        created = self._call(
            "create_rfq",
            [("rfqClOrderId", client_ref), *legs, ("rfqMode", "real-time"), ("expireSec", self.rfq_expire_sec)],
            mutating=True, idempotency_key=client_ref,
        ).data
        rfq_id = str(created.get("rfqId") or "") if isinstance(created, dict) else ""
        if not rfq_id:
            raise PermanentError("create-rfq answered without an rfqId", party=self.party, code=ErrorCode.BAD_RESPONSE)
        deadline = time.monotonic() + self.quote_wait
        while True:
            listing = self._call("list_quotes", [("rfqId", rfq_id)], mutating=False).data or []
            now = datetime.now(UTC)
            quotes = [q for q in (self._quote(item, side, base, decimals, quantity_base_units, client_ref, symbol)
                                  for item in listing) if not q.is_expired(now)]
            if len(quotes) >= self.min_quotes or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
        if not quotes:
            raise TransientError(f"no live quote for RFQ {rfq_id} within {self.quote_wait}s", party=self.party,
                                 code=ErrorCode.NO_QUOTES)
        return best_first(quotes, side)

    def request_quote(self, symbol: str, side: str, quantity_base_units: int, decimals: int,
                      client_ref: str) -> Quote:
        return self.request_quotes(symbol, side, quantity_base_units, decimals, client_ref)[0]

    def _quote(self, item: dict, side: Side, base: str, decimals: int, requested: int, client_ref: str,
               symbol: str) -> Quote:
        base_amount = item.get("sellAmount") if side == Side.SELL else item.get("buyAmount")
        quantity = to_base_units(base_amount, decimals) if base_amount not in (None, "") else requested
        token = f"{item['rfqId']}:{item['quoteId']}:{client_ref}"
        return Quote(
            party=self.party, quote_id=token, symbol=symbol, side=side, price=Decimal(str(item["price"])),
            quantity=quantity, expires_at=parse_venue_time(item["expireTime"]),
            quoted_at=parse_venue_time(item["createTime"]) if item.get("createTime") else datetime.now(UTC),
            provider=item.get("lpName"), raw=dict(item),
        )

    @staticmethod
    def _parse_token(quote_id: str) -> tuple[str, str, str]:
        parts = quote_id.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"not a HashKey quote reference from this adapter: {quote_id!r}")
        return parts[0], parts[1], parts[2]

    def accept_quote(self, quote_id: str, client_order_id: str) -> Order:
        """Accept one quote of the RFQ. Repeating it (same RFQ) can never execute a second trade."""
        rfq_id, venue_quote_id, rfq_client_id = self._parse_token(quote_id)
        if client_order_id != rfq_client_id:
            raise ValueError("on HashKey the trade's idempotency key is the RFQ's client id: pass the client_ref "
                             "the quote was requested with")
        answer = self._call("accept_quote", [("quoteId", venue_quote_id), ("rfqId", rfq_id), ("action", "accept")],
                            mutating=True, idempotency_key=client_order_id).data
        try:
            return self.order_status(client_order_id)
        except (TransientError, PermanentError) as exc:
            if isinstance(exc, PermanentError) and exc.code != ErrorCode.UNKNOWN_ORDER:
                raise
            # Accepted, settlement not visible yet: the caller polls order_status.
            return Order(party=self.party, client_order_id=client_order_id, status=OrderStatus.PENDING,
                         requested_base_units=0, filled_base_units=0, avg_price=None, fees=Decimal(0),
                         fee_currency=None, final=False, raw={"accept": answer})

    def decline_quote(self, quote_id: str) -> None:
        rfq_id, venue_quote_id, client_ref = self._parse_token(quote_id)
        self._call("accept_quote", [("quoteId", venue_quote_id), ("rfqId", rfq_id), ("action", "decline")],
                   mutating=True, idempotency_key=client_ref)

    # -- orders --

    def order_status(self, client_order_id: str) -> Order:
        """State of the trade behind RFQ ``client_order_id``; raises UNKNOWN_ORDER when nothing was executed."""
        now = datetime.now(UTC)
        history = self._call("rfq_history", [
            ("rfqClOrderId", client_order_id),
            ("startTime", int((now - timedelta(days=89)).timestamp())),
            ("endTime", int(now.timestamp()) + 60),
        ], mutating=False).data or []
        rows = [r for r in history if str(r.get("rfqClOrderId")) == client_order_id]
        if not rows:
            raise PermanentError(f"no RFQ with client id {client_order_id!r}", party=self.party,
                                 code=ErrorCode.UNKNOWN_ORDER)
        rfq = rows[0]
        rfq_status = str(rfq.get("status", "")).lower()
        if rfq_status in RFQ_NOT_EXECUTED:
            raise PermanentError(f"RFQ {client_order_id!r} is {rfq_status}: no quote was executed",
                                 party=self.party, code=ErrorCode.UNKNOWN_ORDER)
        try:
            order = self._call("spot_order", [("origClientOrderId", client_order_id)], mutating=False).data
        except PermanentError as exc:
            if exc.code == ErrorCode.UNKNOWN_ORDER and rfq_status in RFQ_IN_FLIGHT:
                return Order(party=self.party, client_order_id=client_order_id, status=OrderStatus.PENDING,
                             requested_base_units=0, filled_base_units=0, avg_price=None, fees=Decimal(0),
                             fee_currency=None, final=False, raw={"rfq": rfq})
            raise
        return self._order(order, client_order_id, rfq)

    def _order(self, data: dict, client_order_id: str, rfq: dict) -> Order:
        base = self._base_of(data, rfq)
        decimals = self.decimals_for(base)
        status, final = SPOT_STATUS.get(str(data.get("status", "")).upper(), (OrderStatus.PENDING, False))
        filled = to_base_units(data.get("executedQty") or "0", decimals)
        if status == OrderStatus.FAILED and filled:
            status = OrderStatus.PARTIALLY_FILLED
        fills = self._fills(data, base, decimals) if filled else ()
        avg = _dec(data.get("avgPrice"))
        if not avg and filled:
            avg = _dec(data.get("cumulativeQuoteQty")) / _dec(data.get("executedQty"))
        return Order(
            party=self.party, client_order_id=client_order_id, status=status,
            requested_base_units=to_base_units(data.get("origQty") or "0", decimals), filled_base_units=filled,
            avg_price=avg or None, fees=_dec(data.get("sumFeeAmount") or data.get("feeAmount") or 0),
            fee_currency=data.get("feeCoin") or None, fills=fills, final=final,
            order_id=str(data.get("orderId")) if data.get("orderId") is not None else None,
            raw={"order": data, "rfq": rfq},
        )

    @staticmethod
    def _base_of(order: dict, rfq: dict) -> str:
        sell, buy = str(rfq.get("sellCcy", "")), str(rfq.get("buyCcy", ""))
        symbol = str(order.get("symbol", ""))
        # Selling coins: the coin is the sold currency; buying: the bought one.
        for candidate in (sell, buy):
            if candidate and symbol.startswith(candidate) and candidate not in {"USD", "USDT", "HKD", "USDC"}:
                return candidate
        return sell if str(order.get("side", "")).upper() == "SELL" else buy

    def _fills(self, order: dict, base: str, decimals: int) -> tuple[Fill, ...]:
        trades = self._call("account_trades", [("symbol", order.get("symbol")), ("orderId", order.get("orderId"))],
                            mutating=False).data or []
        fills = []
        for t in trades:
            if str(t.get("orderId")) != str(order.get("orderId")):
                continue
            price, qty = _dec(t["price"]), str(t["qty"])
            gross = _dec(t["quoteQty"]) if t.get("quoteQty") is not None else price * _dec(qty)
            fills.append(Fill(
                trade_id=str(t.get("tradeId") or t.get("id")), quantity=to_base_units(qty, decimals), price=price,
                gross=gross, fee=_dec(t.get("commission") or 0), fee_currency=str(t.get("commissionAsset") or ""),
                executed_at=parse_venue_time(t.get("time")),
            ))
        return tuple(fills)

    # -- deposits and withdrawals --

    def deposit_address(self, asset: str, chain: str) -> str:
        data = self._call("deposit_address", [("coin", asset.upper()), ("chainType", CHAIN_TYPES.get(chain, chain))],
                          mutating=False).data
        if not data.get("canDeposit", True):
            raise PermanentError(f"deposits of {asset} on {chain} are suspended", party=self.party,
                                 code=ErrorCode.PERMISSION_DENIED)
        if data.get("addressExt"):
            raise PermanentError(f"{asset} on {chain} needs a memo/tag; not supported", party=self.party,
                                 code=ErrorCode.VALIDATION)
        return str(data["address"])

    def deposit_status(self, txid: str) -> Deposit:
        orders = self._call("deposit_orders", [("limit", 1000)], mutating=False).data or []
        for row in orders:
            if str(row.get("txId", "")).lower() == txid.lower():
                code = int(row.get("status", row.get("statusCode", 0)))
                return Deposit(
                    party=self.party, txid=txid, asset=str(row.get("coin", "")),
                    status=DEPOSIT_STATUS.get(code, DepositStatus.PENDING), amount=_dec(row.get("quantity")),
                    venue_status=str(code), reason=str(row.get("refundReason") or row.get("failureReason") or ""),
                    raw=dict(row),
                )
        # The venue has not seen the transaction (yet): pending from our side, never credited.
        return Deposit(party=self.party, txid=txid, asset="", status=DepositStatus.PENDING, amount=Decimal(0),
                       venue_status="NOT_SEEN")

    def withdraw(self, asset: str, chain: str, address: str, amount: int, client_ref: str) -> Withdrawal:
        decimals = self.decimals_for(asset)
        data = self._call("withdraw", [
            ("coin", asset.upper()), ("clientOrderId", client_ref), ("address", address),
            ("quantity", to_decimal_string(amount, decimals)), ("chainType", CHAIN_TYPES.get(chain, chain)),
        ], mutating=True, idempotency_key=client_ref).data
        if data.get("success") is False:
            raise PermanentError(str(data.get("refuseReason") or "withdrawal refused"), party=self.party,
                                 code=ErrorCode.REJECTED)
        return Withdrawal(party=self.party, client_ref=client_ref, withdrawal_id=str(data.get("id")),
                          status=WithdrawalStatus.PENDING, amount_base_units=amount, raw=dict(data))
