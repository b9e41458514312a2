"""A local exchange emulator speaking HashKey Exchange's and OSL's API shapes, for tests and the demo.

One ``ThreadingHTTPServer`` bound to 127.0.0.1 serves both venues under path prefixes:

* ``{base_url}/hashkey/...`` – HashKey shape: ``X-HK-APIKEY``, ``timestamp``/``recvWindow``, hex HMAC-SHA256
  ``signature`` of the query string + body; errors ``HTTP 400 {"code": "...", "msg": "..."}``;
* ``{base_url}/osl/...`` – OSL shape: ``ACCESS-KEY``/``ACCESS-SIGN``/``ACCESS-TIMESTAMP``/``ACCESS-PASSPHRASE``,
  Base64 HMAC-SHA256 of timestamp + METHOD + path + query + body; RFQ quote → trade with ``responseCode``.

Signatures are verified exactly, timestamps against each venue's window (HashKey: ``recvWindow``, at most
60 s, and not more than 1 s ahead; OSL: ±30 s). The paths served are the adapters' ``PATHS``.

Quotes come from three simulated liquidity providers (``emulators.market.LIQUIDITY_PROVIDERS``) pricing off a
replayed market: the real BTC/USD day and seeded synthetic ETH and LTC paths calibrated to it (see
``emulators.market``). HashKey shows the three quotes of an RFQ; OSL, as a dealer, quotes the best of them.

Everything a test needs to break is on the controller returned by :func:`start_exchange_emulator`:

* ``fail_next(kind, venue=None, path=None, count=1, **opts)`` with ``kind`` one of
  ``rate_limit`` (HTTP 429 + ``Retry-After``; ``retry_after=1``), ``server_error`` (HTTP 503 from a
  "gateway", nothing done), ``timeout`` (the server does the work, then holds the connection ``hang``
  seconds (default 1.0) and closes it without an answer; ``processed=False`` to hold without doing it),
  ``indeterminate`` (does the work, then drops the connection at once), ``reported_indeterminate`` (does
  the work and answers that the outcome is unknown: HashKey ``-1006``, OSL ``orderStatus: INDETERMINATE``)
  and ``partial_fill`` (the next executed trade fills only ``ratio`` (default 0.6) of the quantity; the rest
  is cancelled);
* ``set_latency(seconds)``, ``set_quote_ttl(seconds)``, ``set_market_minute(minute)``;
* deposits: ``add_deposit(...)`` (held as "sender not whitelisted" unless the sender is whitelisted),
  ``hold_deposit``, ``release_deposit``, ``set_deposit_status``; ``whitelist_sender``,
  ``whitelist_withdrawal_address``; ``set_balance``;
* what happened: ``executions(venue)`` (every trade executed; a retried accept never adds one),
  ``requests(venue)``.

Trades are idempotent on the client id: HashKey's RFQ client id (one RFQ executes at most once), OSL's
``clientRequestId``; withdrawals on their client ids. Run ``python -m emulators.exchange --port 8701`` for
the demo (credentials from ``HASHKEY_API_KEY``/``HASHKEY_API_SECRET``/``OSL_API_KEY``/``OSL_API_SECRET``/
``OSL_API_PASSPHRASE`` or generated for the run).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import itertools
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cases.addresses import demo_address
from emulators.market import LIQUIDITY_PROVIDERS, ReplayMarket

HOST = "127.0.0.1"
VENUES = ("hashkey", "osl")
DECIMALS = {"BTC": 8, "ETH": 18, "LTC": 8}
QUOTE_CURRENCIES = {"USD", "USDT"}
FEE_RATE = Decimal("0.0010")  # 10 bps of the proceeds, charged in the quote currency
CENT = Decimal("0.01")
HASHKEY_MAX_RECV_WINDOW = 60_000
OSL_TIME_WINDOW_MS = 30_000
FAULT_KINDS = {"rate_limit", "server_error", "timeout", "indeterminate", "reported_indeterminate", "partial_fill"}
CHAIN_FORMATS = {  # venue chain names → address format
    "BTC": "btc", "BITCOIN": "btc", "LTC": "ltc", "LITECOIN": "ltc", "ETH": "evm", "ERC20": "evm",
    "ETHEREUM": "evm", "TRON": "tron", "TRX": "tron", "TRC20": "tron",
}
INITIAL_BALANCES = {"BTC": Decimal(5000), "ETH": Decimal(100000), "LTC": Decimal(1000000), "USD": Decimal(0),
                    "USDT": Decimal(0)}


@dataclass(frozen=True)
class Credentials:
    api_key: str
    secret: str
    passphrase: str = ""

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key[:4]}…)"


@dataclass
class Fault:
    kind: str
    venue: str | None
    path: str | None
    remaining: int
    opts: dict[str, Any]

    def matches(self, venue: str, path: str) -> bool:
        return (self.venue in (None, venue)) and (self.path is None or path is None or self.path in path)


@dataclass
class Execution:
    """One executed trade (both venues)."""

    venue: str
    order_id: str
    client_id: str
    quote_id: str
    base: str
    quote_ccy: str
    side: str  # client side: sell | buy
    requested: Decimal
    filled: Decimal
    price: Decimal
    fills: list[dict]
    fee: Decimal
    status: str  # FILLED | PARTIALLY_CANCELED
    created_ms: int


@dataclass
class VenueState:
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(INITIAL_BALANCES))
    rfqs: dict[str, dict] = field(default_factory=dict)
    rfq_by_client: dict[str, str] = field(default_factory=dict)
    quotes: dict[str, dict] = field(default_factory=dict)
    executions: dict[str, Execution] = field(default_factory=dict)  # by client id
    deposits: dict[str, dict] = field(default_factory=dict)  # by txid
    withdrawals: dict[str, dict] = field(default_factory=dict)  # by client id
    withdrawal_whitelist: set[str] = field(default_factory=set)
    sender_whitelist: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, int]] = field(default_factory=list)


class ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decimal(value: Any, what: str, error) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, TypeError):
        raise error(f"Required field '{what}' missing or invalid") from None
    if not amount.is_finite() or amount <= 0:
        raise error(f"Required field '{what}' missing or invalid")
    return amount


def _fmt(amount: Decimal, decimals: int) -> str:
    return format(amount.quantize(Decimal(1).scaleb(-decimals)), "f")


class EmulatorState:
    """Everything the two venues know; one lock, held only while state changes (never while sleeping)."""

    def __init__(self, *, seed: int, latency: float, quote_ttl: float, credentials: dict[str, Credentials],
                 market: ReplayMarket | None = None) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.latency = latency
        self.quote_ttl = quote_ttl
        self.credentials = credentials
        self.market = market or ReplayMarket(seed=seed)
        self.market_minute: int | None = None
        self.venues = {v: VenueState() for v in VENUES}
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def minute(self) -> int:
        return self.market.minute_of_day() if self.market_minute is None else self.market_minute

    def take_fault(self, venue: str, path: str | None, kinds: set[str]) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind in kinds and fault.matches(venue, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def lp_quotes(self, base: str, side: str, quantity: Decimal, nonce: str) -> list[tuple[str, Decimal]]:
        minute = self.minute()
        return [(lp.name, self.market.price(lp, base, side, quantity, minute, nonce)) for lp in LIQUIDITY_PROVIDERS]

    def execute(self, venue: str, *, client_id: str, quote_id: str, base: str, quote_ccy: str, side: str,
                quantity: Decimal, price: Decimal) -> Execution:
        """Book a trade (call with the lock held). Partial fills come from the `partial_fill` fault."""
        state = self.venues[venue]
        decimals = DECIMALS[base]
        partial = self.take_fault(venue, None, {"partial_fill"})
        filled = quantity
        if partial is not None:
            ratio = Decimal(str(partial.opts.get("ratio", "0.6")))
            filled = (quantity * ratio).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)
        # Two fills for a full execution (the providers' legs), one for a partial one.
        legs = [filled] if partial is not None else [
            (filled * Decimal("0.6")).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)]
        if partial is None:
            legs.append(filled - legs[0])
        legs = [leg for leg in legs if leg > 0]
        order_id = str(1_700_000_000_000_000_000 + self.next_id())
        now = _now_ms()
        fills, fee_total = [], Decimal(0)
        for n, leg in enumerate(legs, start=1):
            gross = (leg * price).quantize(CENT, rounding=ROUND_DOWN)
            fee = (gross * FEE_RATE).quantize(CENT, rounding=ROUND_HALF_UP)
            fee_total += fee
            fills.append({"trade_id": f"{order_id}-{n}", "quantity": leg, "price": price, "gross": gross, "fee": fee,
                          "time": now})
        gross_total = sum((f["gross"] for f in fills), Decimal(0))
        if side == "sell":
            state.balances[base] -= filled
            state.balances[quote_ccy] = state.balances.get(quote_ccy, Decimal(0)) + gross_total - fee_total
        else:
            state.balances[base] += filled
            state.balances[quote_ccy] = state.balances.get(quote_ccy, Decimal(0)) - gross_total - fee_total
        execution = Execution(
            venue=venue, order_id=order_id, client_id=client_id, quote_id=quote_id, base=base, quote_ccy=quote_ccy,
            side=side, requested=quantity, filled=filled, price=price, fills=fills, fee=fee_total,
            status="FILLED" if filled == quantity else "PARTIALLY_CANCELED", created_ms=now,
        )
        state.executions[client_id] = execution
        return execution

    def deposit_address(self, venue: str, asset: str, chain: str) -> str:
        fmt = CHAIN_FORMATS.get(chain.upper())
        if fmt is None:
            raise KeyError(chain)
        return demo_address(fmt, f"emulator:{self.seed}:{venue}:{asset.upper()}:{chain.upper()}")


# ---- HashKey shape ---------------------------------------------------------------------------------


def _hk_error(code: str, msg: str, status: int = 400) -> ApiError:
    return ApiError(status, {"code": code, "msg": msg})


class HashKeyApi:
    prefix = "/hashkey"

    def __init__(self, state: EmulatorState) -> None:
        self.s = state

    def authenticate(self, method: str, raw_query: str, body: bytes, headers) -> dict[str, str]:
        creds = self.s.credentials["hashkey"]
        if not hmac.compare_digest(headers.get("X-HK-APIKEY", ""), creds.api_key):
            raise _hk_error("0102", "Invalid APIKey")
        parts = [p for p in raw_query.split("&") if p]
        signature = [p.split("=", 1)[1] for p in parts if p.startswith("signature=")]
        unsigned = "&".join(p for p in parts if not p.startswith("signature="))
        text = body.decode("utf-8") if body else ""
        params = dict(parse_qsl(unsigned, keep_blank_values=True))
        if text and "application/x-www-form-urlencoded" in headers.get("Content-Type", ""):
            params.update(parse_qsl(text, keep_blank_values=True))
        try:
            timestamp = int(params["timestamp"])
            recv_window = int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise _hk_error("0001", "Required field 'timestamp' missing or invalid") from None
        if not 0 < recv_window <= HASHKEY_MAX_RECV_WINDOW:
            raise _hk_error("0001", "Required field 'recvWindow' missing or invalid")
        now = _now_ms()
        if timestamp > now + 1000 or now - timestamp > recv_window:
            raise _hk_error("-1021", "Timestamp for this request is outside of the recvWindow.")
        expected = hmac.new(creds.secret.encode(), (unsigned + text).encode(), hashlib.sha256).hexdigest()
        if len(signature) != 1 or not hmac.compare_digest(signature[0].lower(), expected):
            raise _hk_error("0001", "Incorrect signature")
        return params

    def dispatch(self, method: str, path: str, params: dict[str, str]) -> Any:
        routes = {
            "/api/v1/market-place/create-rfq": self.create_rfq,
            "/api/v1/market-place/get-quotes": self.get_quotes,
            "/api/v1/market-place/accept-quote": self.accept_quote,
            "/api/v1/market-place/get-rfq-history": self.rfq_history,
            "/api/v1/spot/order": self.spot_order,
            "/api/v1/account/trades": self.account_trades,
            "/api/v1/account/deposit/address": self.deposit_address,
            "/api/v1/account/depositOrders": self.deposit_orders,
            "/api/v1/account/withdraw": self.withdraw,
        }
        handler = routes.get(path)
        if handler is None:
            raise ApiError(404, {"code": "-1004", "msg": f"Unknown endpoint {path}"})
        return handler(params)

    @property
    def v(self) -> VenueState:
        return self.s.venues["hashkey"]

    def create_rfq(self, p: dict[str, str]) -> dict:
        client_id = p.get("rfqClOrderId") or f"CRFQ{self.s.next_id()}"
        if client_id in self.v.rfq_by_client:  # same client id: the same RFQ, never a second one
            rfq = self.v.rfqs[self.v.rfq_by_client[client_id]]
            return {"rfqClOrderId": client_id, "rfqId": rfq["rfqId"], "status": rfq["status"]}
        buy, sell = p.get("buyCcy", "").upper(), p.get("sellCcy", "").upper()
        if p.get("rfqMode") not in {"real-time", "delayed"}:
            raise _hk_error("0001", "Required field 'rfqMode' missing or invalid")
        if sell in DECIMALS and buy in QUOTE_CURRENCIES:
            base, quote_ccy, side, field_name = sell, buy, "sell", "sellAmount"
        elif buy in DECIMALS and sell in QUOTE_CURRENCIES:
            base, quote_ccy, side, field_name = buy, sell, "buy", "buyAmount"
        else:
            raise _hk_error("0201", "Instrument not found")
        amount = _decimal(p.get(field_name), field_name, lambda m: _hk_error("0001", m))
        if amount != amount.quantize(Decimal(1).scaleb(-DECIMALS[base])):
            raise _hk_error("0001", f"Required field '{field_name}' missing or invalid")
        expire_sec = int(p.get("expireSec", 1800))
        if not 600 <= expire_sec <= 3600:
            raise _hk_error("0001", "Required field 'expireSec' missing or invalid")
        now = time.time()
        rfq_id = f"RFQ{638459562162049024 + self.s.next_id()}"
        rfq = {"rfqId": rfq_id, "rfqClOrderId": client_id, "buyCcy": buy, "sellCcy": sell, "base": base,
               "quote_ccy": quote_ccy, "side": side, "amount": amount, "rfqMode": p["rfqMode"], "status": "new",
               "created": now, "expires": now + expire_sec, "quoteIds": [], "accepted": None, "executedTime": None}
        for n, (lp, price) in enumerate(self.s.lp_quotes(base, side, amount, rfq_id), start=1):
            arrives = now + 0.02 * n  # providers answer a little apart
            quote_id = f"QUOTE{789456123 + self.s.next_id()}"
            self.v.quotes[quote_id] = {"quoteId": quote_id, "rfqId": rfq_id, "lpName": lp, "price": price,
                                       "arrives": arrives, "expires": arrives + self.s.quote_ttl, "status": "new"}
            rfq["quoteIds"].append(quote_id)
        self.v.rfqs[rfq_id] = rfq
        self.v.rfq_by_client[client_id] = rfq_id
        return {"rfqClOrderId": client_id, "rfqId": rfq_id, "status": "new"}

    def _quote_view(self, rfq: dict, q: dict) -> dict:
        amount = _fmt(rfq["amount"], DECIMALS[rfq["base"]])
        return {"quoteId": q["quoteId"], "rfqId": rfq["rfqId"], "buyCcy": rfq["buyCcy"], "sellCcy": rfq["sellCcy"],
                "buyAmount": amount if rfq["side"] == "buy" else "",
                "sellAmount": amount if rfq["side"] == "sell" else "",
                "price": str(q["price"]), "createTime": int(q["arrives"] * 1000),
                # Unix seconds as documented; rounded up, the emulator itself checks to the millisecond.
                "expireTime": int(-(-q["expires"] // 1)), "lpName": q["lpName"]}

    def get_quotes(self, p: dict[str, str]) -> list[dict]:
        rfq = self.v.rfqs.get(p.get("rfqId", ""))
        if rfq is None:
            raise _hk_error("-1004", "RFQ not found")
        now = time.time()
        return [self._quote_view(rfq, q) for q in (self.v.quotes[i] for i in rfq["quoteIds"])
                if q["arrives"] <= now and q["status"] == "new" and rfq["status"] == "new"]

    def accept_quote(self, p: dict[str, str]) -> dict:
        quote = self.v.quotes.get(p.get("quoteId", ""))
        rfq = self.v.rfqs.get(p.get("rfqId", ""))
        if quote is None or rfq is None or quote["rfqId"] != rfq["rfqId"]:
            raise _hk_error("-1004", "Invalid quoteId")
        action = p.get("action")
        if action == "decline":
            if rfq["accepted"]:
                raise _hk_error("-1004", "RFQ already accepted another quote")
            quote["status"] = "declined"
            return {"quoteId": quote["quoteId"], "rfqId": rfq["rfqId"], "status": "declined", "expiryTime": None}
        if action != "accept":
            raise _hk_error("0001", "Required field 'action' missing or invalid")
        if rfq["accepted"] == quote["quoteId"]:  # a repeated accept is the same acceptance
            return {"quoteId": quote["quoteId"], "rfqId": rfq["rfqId"], "status": "accepted",
                    "expiryTime": int(min(quote["expires"], rfq["expires"]))}
        if rfq["accepted"]:
            raise _hk_error("-1004", "RFQ already accepted another quote")
        now = time.time()
        if now >= quote["expires"] or now >= rfq["expires"] or quote["status"] == "expired":
            quote["status"] = "expired"
            raise _hk_error("-1004", "Quote has expired")
        if quote["status"] != "new" or now < quote["arrives"]:
            raise _hk_error("-1004", "Invalid quoteId")
        if rfq["side"] == "sell" and self.v.balances.get(rfq["base"], Decimal(0)) < rfq["amount"]:
            raise _hk_error("0401", "Insufficient asset")
        self.s.execute("hashkey", client_id=rfq["rfqClOrderId"], quote_id=quote["quoteId"], base=rfq["base"],
                       quote_ccy=rfq["quote_ccy"], side=rfq["side"], quantity=rfq["amount"], price=quote["price"])
        quote["status"], rfq["accepted"], rfq["status"] = "accepted", quote["quoteId"], "successful"
        rfq["executedTime"] = _now_ms()
        return {"quoteId": quote["quoteId"], "rfqId": rfq["rfqId"], "status": "accepted",
                "expiryTime": int(min(quote["expires"], rfq["expires"]))}

    def rfq_history(self, p: dict[str, str]) -> list[dict]:
        rows = []
        for rfq in self.v.rfqs.values():
            if p.get("rfqId") and p["rfqId"] != rfq["rfqId"]:
                continue
            if p.get("rfqClOrderId") and p["rfqClOrderId"] != rfq["rfqClOrderId"]:
                continue
            status = rfq["status"]
            if status == "new" and time.time() >= rfq["expires"]:
                status = "expired"
            if p.get("status") and p["status"] != status:
                continue
            accepted = self.v.quotes.get(rfq["accepted"] or "")
            amount = _fmt(rfq["amount"], DECIMALS[rfq["base"]])
            rows.append({"rfqCreateTime": int(rfq["created"]), "rfqId": rfq["rfqId"],
                         "quoteId": accepted["quoteId"] if accepted else "", "rfqClOrderId": rfq["rfqClOrderId"],
                         "rfqMode": rfq["rfqMode"], "quoteMode": "auto", "buyCcy": rfq["buyCcy"],
                         "sellCcy": rfq["sellCcy"], "buyAmount": amount if rfq["side"] == "buy" else "",
                         "sellAmount": amount if rfq["side"] == "sell" else "",
                         "price": str(accepted["price"]) if accepted else "", "status": status,
                         "executedTime": rfq["executedTime"]})
        return rows

    def _order_view(self, e: Execution) -> dict:
        d = DECIMALS[e.base]
        quote_qty = sum((f["gross"] for f in e.fills), Decimal(0))
        return {"accountId": "1453450776554918656", "exchangeId": 301, "symbol": f"{e.base}{e.quote_ccy}",
                "symbolName": f"{e.base}{e.quote_ccy}", "clientOrderId": e.client_id, "orderId": e.order_id,
                "price": str(e.price), "origQty": _fmt(e.requested, d), "executedQty": _fmt(e.filled, d),
                "cumulativeQuoteQty": str(quote_qty), "avgPrice": str(e.price) if e.filled else "0",
                "status": e.status, "timeInForce": "IOC", "type": "LIMIT", "side": e.side.upper(),
                "time": str(e.created_ms), "updateTime": str(e.created_ms), "feeCoin": e.quote_ccy,
                "feeAmount": str(e.fills[-1]["fee"]) if e.fills else "0", "sumFeeAmount": str(e.fee)}

    def spot_order(self, p: dict[str, str]) -> dict:
        e = self.v.executions.get(p.get("origClientOrderId", ""))
        if e is None and p.get("orderId"):
            e = next((x for x in self.v.executions.values() if x.order_id == p["orderId"]), None)
        if e is None:
            raise _hk_error("0211", "Order not found")
        return self._order_view(e)

    def account_trades(self, p: dict[str, str]) -> list[dict]:
        rows = []
        for e in self.v.executions.values():
            if p.get("symbol") and p["symbol"] != f"{e.base}{e.quote_ccy}":
                continue
            if p.get("orderId") and p["orderId"] != e.order_id:
                continue
            for f in e.fills:
                rows.append({"id": f["trade_id"], "tradeId": f["trade_id"], "orderId": e.order_id,
                             "symbol": f"{e.base}{e.quote_ccy}", "price": str(f["price"]),
                             "qty": _fmt(f["quantity"], DECIMALS[e.base]), "quoteQty": str(f["gross"]),
                             "commission": str(f["fee"]), "commissionAsset": e.quote_ccy, "time": str(f["time"]),
                             "isBuyer": e.side == "buy", "isMaker": False})
        return rows

    def deposit_address(self, p: dict[str, str]) -> dict:
        coin, chain = p.get("coin", "").upper(), p.get("chainType", "")
        try:
            address = self.s.deposit_address("hashkey", coin, chain)
        except KeyError:
            raise _hk_error("0201", "Instrument not found") from None
        return {"canDeposit": True, "address": address, "addressExt": "", "minQuantity": "0.0001",
                "needAddressTag": False, "requiredConfirmTimes": 6, "canWithdrawConfirmTimes": 6,
                "coinType": "CHAIN_TOKEN"}

    HK_DEPOSIT_CODES = {"credited": 4, "pending": 12, "held": 1, "rejected": 3}

    def deposit_orders(self, p: dict[str, str]) -> list[dict]:
        rows = []
        for d in self.v.deposits.values():
            if p.get("coin") and p["coin"].upper() not in {d["asset"], f"{d['chain']}_{d['asset']}"}:
                continue
            code = self.HK_DEPOSIT_CODES[d["status"]]
            rows.append({"time": str(d["time"]), "depositOrderId": d["id"], "clientOrderId": "", "coin": d["asset"],
                         "coinName": d["asset"], "address": d["address"], "quantity": str(d["amount"]),
                         "refundCode": "", "refundReason": d["reason"], "status": code, "statusCode": code,
                         "txId": d["txid"]})
        return rows

    def withdraw(self, p: dict[str, str]) -> dict:
        client_id = p.get("clientOrderId") or ""
        if not client_id:
            raise _hk_error("0001", "Required field 'clientOrderId' missing or invalid")
        if client_id in self.v.withdrawals:  # same client id: the same withdrawal
            return self.v.withdrawals[client_id]["response"]
        coin = p.get("coin", "").upper()
        if coin not in DECIMALS:
            raise _hk_error("0201", "Instrument not found")
        amount = _decimal(p.get("quantity"), "quantity", lambda m: _hk_error("0001", m))
        if p.get("address") not in self.v.withdrawal_whitelist:
            raise _hk_error("-1004", "Withdrawal address is not in the whitelist")
        if self.v.balances.get(coin, Decimal(0)) < amount:
            raise _hk_error("0401", "Insufficient asset")
        self.v.balances[coin] -= amount
        wid = f"W{578755281141776384 + self.s.next_id()}"
        response = {"success": True, "id": wid, "orderId": wid, "accountId": "1453450776554918656",
                    "needBrokerAudit": False, "refuseReason": ""}
        self.v.withdrawals[client_id] = {"coin": coin, "amount": amount, "address": p["address"], "response": response}
        return response


# ---- OSL shape -------------------------------------------------------------------------------------


def _osl_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, {"resultCode": "FAILURE", "errorCode": code, "message": message})


class OslApi:
    prefix = "/osl"

    def __init__(self, state: EmulatorState) -> None:
        self.s = state

    @property
    def v(self) -> VenueState:
        return self.s.venues["osl"]

    def authenticate(self, method: str, path: str, raw_query: str, body: bytes, headers) -> None:
        creds = self.s.credentials["osl"]
        key, sign = headers.get("ACCESS-KEY"), headers.get("ACCESS-SIGN")
        timestamp, passphrase = headers.get("ACCESS-TIMESTAMP"), headers.get("ACCESS-PASSPHRASE")
        if not (key and sign and timestamp and passphrase):
            raise _osl_error(401, "UNAUTHORIZED", "Missing authentication headers")
        if not hmac.compare_digest(key, creds.api_key):
            raise _osl_error(401, "INVALID_API_KEY", "Invalid API key")
        if not hmac.compare_digest(passphrase, creds.passphrase):
            raise _osl_error(401, "INVALID_PASSPHRASE", "Invalid passphrase")
        try:
            skew = abs(_now_ms() - int(timestamp))
        except ValueError:
            raise _osl_error(401, "INVALID_TIMESTAMP", "Invalid timestamp") from None
        if skew > OSL_TIME_WINDOW_MS:
            raise _osl_error(401, "TIMESTAMP_EXPIRED", "Request timestamp outside the allowed window")
        prehash = f"{timestamp}{method}{path}{'?' + raw_query if raw_query else ''}{body.decode('utf-8')}"
        expected = base64.b64encode(hmac.new(creds.secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(sign, expected):
            raise _osl_error(401, "INVALID_SIGNATURE", "Signature verification failed")

    def dispatch(self, method: str, path: str, query: dict[str, str], payload: dict) -> Any:
        routes = {
            ("POST", "/api/3/retail/quote"): self.quote,
            ("POST", "/api/3/retail/trade"): self.trade,
            ("GET", "/api/3/retail/trade"): self.trade_query,
            ("GET", "/api/3/wallet/deposit-address"): self.deposit_address,
            ("GET", "/api/3/wallet/deposits"): self.deposits,
            ("POST", "/api/3/wallet/withdraw"): self.withdraw,
        }
        handler = routes.get((method, path))
        if handler is None:
            raise _osl_error(404, "NOT_FOUND", f"Unknown endpoint {method} {path}")
        if method == "POST" and "tonce" not in payload:
            raise _osl_error(400, "VALIDATION_ERROR", "tonce is required")
        return handler(query if method == "GET" else payload)

    def quote(self, payload: dict) -> dict:
        req = payload.get("quoteRequest") or {}
        base, quote_ccy = str(req.get("tradedCurrency", "")).upper(), str(req.get("settlementCurrency", "")).upper()
        if base not in DECIMALS or quote_ccy not in QUOTE_CURRENCIES:
            return {"resultCode": "OK", "quoteResponse": {"responseCode": "CANNOT_PRICE"}}
        amount = _decimal(req.get("tradedCurrencyAmount"), "tradedCurrencyAmount",
                          lambda m: _osl_error(400, "VALIDATION_ERROR", m))
        side = "buy" if req.get("buyTradedCurrency") else "sell"
        now = time.time()
        quote_id = f"{self.s.seed:x}-{self.s.next_id():08d}-q"
        prices = self.s.lp_quotes(base, side, amount, quote_id)
        lp, price = max(prices, key=lambda x: x[1]) if side == "sell" else min(prices, key=lambda x: x[1])
        quote = {"quoteId": quote_id, "base": base, "quote_ccy": quote_ccy, "side": side, "amount": amount,
                 "price": price, "lp": lp, "created": now, "expires": now + self.s.quote_ttl, "executedBy": None}
        self.v.quotes[quote_id] = quote
        return {"resultCode": "OK", "quoteResponse": {
            "responseCode": "FULL_QUOTE", "quoteId": quote_id, "quoteCreatedTime": int(now * 1000),
            "quoteExpiryTime": int(quote["expires"] * 1000), "buyTradedCurrency": side == "buy",
            "tradedCurrency": base, "settlementCurrency": quote_ccy,
            "tradedCurrencyAmount": _fmt(amount, DECIMALS[base]),
            "settlementCurrencyAmount": str((amount * price).quantize(CENT, rounding=ROUND_DOWN)),
            "rate": str(price), "liquidityProvider": lp,
        }}

    def _trade_view(self, e: Execution, response_code: str = "EXECUTED") -> dict:
        d = DECIMALS[e.base]
        gross = sum((f["gross"] for f in e.fills), Decimal(0))
        return {"responseCode": response_code, "orderStatus": "SUCCESS" if e.status == "FILLED" else "PARTIALLY_FILLED",
                "tradeId": e.order_id, "clientRequestId": e.client_id, "quoteId": e.quote_id,
                "buyTradedCurrency": e.side == "buy", "tradedCurrency": e.base, "settlementCurrency": e.quote_ccy,
                "tradedCurrencyAmount": _fmt(e.requested, d), "filledQuantity": _fmt(e.filled, d),
                "averagePrice": str(e.price), "settlementCurrencyAmount": str(gross), "feeAmount": str(e.fee),
                "feeCurrency": e.quote_ccy, "timestamp": e.created_ms,
                "fills": [{"fillId": f["trade_id"], "quantity": _fmt(f["quantity"], d), "price": str(f["price"]),
                           "settlementAmount": str(f["gross"]), "fee": str(f["fee"]), "feeCurrency": e.quote_ccy,
                           "timestamp": f["time"]} for f in e.fills]}

    def trade(self, payload: dict) -> dict:
        req = payload.get("tradeRequest") or {}
        client_id = str(req.get("clientRequestId") or "")
        if not client_id:
            raise _osl_error(400, "VALIDATION_ERROR", "clientRequestId is required")
        existing = self.v.executions.get(client_id)
        if existing is not None:  # same clientRequestId: the same trade, never a second one
            return {"resultCode": "OK", "tradeResponse": self._trade_view(existing)}
        quote = self.v.quotes.get(str(req.get("quoteId", "")))
        if quote is None or quote["executedBy"] is not None:
            return {"resultCode": "OK", "tradeResponse": {"responseCode": "INVALID_QUOTE_ID"}}
        if time.time() >= quote["expires"]:
            return {"resultCode": "OK", "tradeResponse": {"responseCode": "QUOTE_EXPIRED"}}
        if quote["side"] == "sell" and self.v.balances.get(quote["base"], Decimal(0)) < quote["amount"]:
            return {"resultCode": "OK", "tradeResponse": {"responseCode": "INSUFFICIENT_FUND"}}
        execution = self.s.execute("osl", client_id=client_id, quote_id=quote["quoteId"], base=quote["base"],
                                   quote_ccy=quote["quote_ccy"], side=quote["side"], quantity=quote["amount"],
                                   price=quote["price"])
        quote["executedBy"] = client_id
        return {"resultCode": "OK", "tradeResponse": self._trade_view(execution)}

    def trade_query(self, query: dict[str, str]) -> dict:
        e = self.v.executions.get(query.get("clientRequestId", ""))
        if e is None:
            raise _osl_error(404, "TRADE_NOT_FOUND", "No trade with this clientRequestId")
        return {"resultCode": "OK", "trade": self._trade_view(e)}

    def deposit_address(self, query: dict[str, str]) -> dict:
        currency, network = query.get("currency", "").upper(), query.get("network", "")
        try:
            address = self.s.deposit_address("osl", currency, network)
        except KeyError:
            raise _osl_error(400, "VALIDATION_ERROR", f"Unsupported network {network}") from None
        return {"resultCode": "OK", "data": {"currency": currency, "network": network, "address": address}}

    OSL_DEPOSIT_STATUS = {"credited": "COMPLETED", "pending": "CONFIRMING", "held": "PENDING_DECLARATION",
                          "rejected": "REJECTED"}

    def deposits(self, query: dict[str, str]) -> dict:
        rows = [{"txId": d["txid"], "currency": d["asset"], "network": d["chain"], "amount": str(d["amount"]),
                 "address": d["address"], "status": self.OSL_DEPOSIT_STATUS[d["status"]], "reason": d["reason"],
                 "createdTime": d["time"]}
                for d in self.v.deposits.values() if not query.get("txId") or query["txId"] == d["txid"]]
        return {"resultCode": "OK", "data": rows}

    def withdraw(self, payload: dict) -> dict:
        client_id = str(payload.get("clientWithdrawId") or "")
        if not client_id:
            raise _osl_error(400, "VALIDATION_ERROR", "clientWithdrawId is required")
        if client_id in self.v.withdrawals:
            return self.v.withdrawals[client_id]["response"]
        currency = str(payload.get("currency", "")).upper()
        if currency not in DECIMALS:
            raise _osl_error(400, "VALIDATION_ERROR", f"Unsupported currency {currency}")
        amount = _decimal(payload.get("amount"), "amount", lambda m: _osl_error(400, "VALIDATION_ERROR", m))
        if payload.get("address") not in self.v.withdrawal_whitelist:
            raise _osl_error(400, "ADDRESS_NOT_WHITELISTED", "Withdrawal address is not whitelisted")
        if self.v.balances.get(currency, Decimal(0)) < amount:
            raise _osl_error(400, "INSUFFICIENT_FUND", "Insufficient fund in the account")
        self.v.balances[currency] -= amount
        response = {"resultCode": "OK", "data": {"withdrawalId": f"OSLW-{self.s.next_id():08d}",
                                                 "clientWithdrawId": client_id, "status": "PENDING"}}
        self.v.withdrawals[client_id] = {"coin": currency, "amount": amount, "response": response}
        return response


# ---- HTTP server -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "ExchangeEmulator/1.0"
    state: EmulatorState  # set on the subclass made per server

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self, hang: float = 0.0) -> None:
        """Close the connection without an answer (after holding it `hang` seconds)."""
        if hang:
            time.sleep(hang)
        self.close_connection = True

    def _handle(self, method: str) -> None:
        s = self.state
        parts = urlsplit(self.path)
        venue = parts.path.split("/")[1] if parts.path.count("/") >= 2 else ""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if venue not in VENUES:
            self._send(404, {"error": "unknown venue"})
            return
        api_path = parts.path[len(venue) + 1:]
        if s.latency:
            time.sleep(s.latency)

        before = s.take_fault(venue, api_path, {"rate_limit", "server_error", "timeout"})
        if before is not None and not (before.kind == "timeout" and before.opts.get("processed", True)):
            self._record(venue, method, api_path, 0)
            if before.kind == "rate_limit":
                wait = before.opts.get("retry_after", 1)
                body_ = ({"code": "0003", "msg": "Rate limit exceeded"} if venue == "hashkey" else
                         {"resultCode": "FAILURE", "errorCode": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"})
                self._send(429, body_, {"Retry-After": wait})
            elif before.kind == "server_error":
                self._send(int(before.opts.get("status", 503)), b"Service Unavailable")
            else:
                self._drop(float(before.opts.get("hang", 1.0)))
            return
        after = before  # a processed timeout: do the work, then never answer

        try:
            with s.lock:
                if venue == "hashkey":
                    api = HashKeyApi(s)
                    params = api.authenticate(method, parts.query, body, self.headers)
                    result = api.dispatch(method, api_path, params)
                else:
                    api = OslApi(s)
                    api.authenticate(method, parts.path, parts.query, body, self.headers)
                    try:
                        payload = json.loads(body) if body else {}
                    except ValueError:
                        raise _osl_error(400, "VALIDATION_ERROR", "Body is not JSON") from None
                    result = api.dispatch(method, api_path, dict(parse_qsl(parts.query)), payload)
            status, response, headers = 200, result, {}
        except ApiError as exc:
            status, response, headers = exc.status, exc.body, exc.headers
        self._record(venue, method, api_path, status)

        reported = s.take_fault(venue, api_path, {"reported_indeterminate"}) if status == 200 else None
        if reported is not None:
            if venue == "hashkey":
                status, response = 400, {"code": "-1006", "msg": "An unexpected response was received from the "
                                                                 "message bus. Execution status unknown."}
            elif isinstance(response, dict) and "tradeResponse" in response:
                response = {**response, "tradeResponse": {**response["tradeResponse"], "orderStatus": "INDETERMINATE"}}
        if after is None:
            after = s.take_fault(venue, api_path, {"indeterminate"})
        if after is not None:
            self._drop(float(after.opts.get("hang", 1.0)) if after.kind == "timeout" else 0.0)
            return
        self._send(status, response, headers)

    def _record(self, venue: str, method: str, path: str, status: int) -> None:
        with self.state.lock:
            self.state.venues[venue].requests.append((method, path, status))


class EmulatorController:
    """Handle on a running emulator: its URLs, credentials and the switches tests flip."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread, state: EmulatorState) -> None:
        self._server, self._thread, self.state = server, thread, state
        host, port = server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self.hashkey_url = f"{self.base_url}/hashkey"
        self.osl_url = f"{self.base_url}/osl"
        self.credentials = state.credentials
        self.market = state.market

    # -- faults and timing --

    def fail_next(self, kind: str, *, venue: str | None = None, path: str | None = None, count: int = 1,
                  **opts) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        if venue is not None and venue not in VENUES:
            raise ValueError(f"unknown venue {venue!r}")
        with self.state.lock:
            self.state.faults.append(Fault(kind, venue, path, count, opts))

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def set_latency(self, seconds: float) -> None:
        self.state.latency = max(0.0, float(seconds))

    def set_quote_ttl(self, seconds: float) -> None:
        self.state.quote_ttl = float(seconds)

    def set_market_minute(self, minute: int | None) -> None:
        """Pin the replay to minute 0–1439 of the day (None: follow the wall clock's time of day)."""
        self.state.market_minute = None if minute is None else int(minute) % 1440

    # -- accounts, deposits, whitelists --

    def set_balance(self, venue: str, asset: str, amount: Decimal | str | int) -> None:
        with self.state.lock:
            self.state.venues[venue].balances[asset.upper()] = Decimal(str(amount))

    def balance(self, venue: str, asset: str) -> Decimal:
        with self.state.lock:
            return self.state.venues[venue].balances.get(asset.upper(), Decimal(0))

    def whitelist_sender(self, venue: str, address: str) -> None:
        with self.state.lock:
            self.state.venues[venue].sender_whitelist.add(address)

    def whitelist_withdrawal_address(self, venue: str, address: str) -> None:
        with self.state.lock:
            self.state.venues[venue].withdrawal_whitelist.add(address)

    def add_deposit(self, venue: str, *, asset: str, chain: str, txid: str, amount: Decimal | str,
                    sender: str | None = None, status: str | None = None, reason: str = "") -> None:
        """Make the venue see an incoming transfer. A sender not on the venue's whitelist is held."""
        asset = asset.upper()
        with self.state.lock:
            v = self.state.venues[venue]
            if status is None:
                held = sender is not None and sender not in v.sender_whitelist
                status = "held" if held else "credited"
                reason = reason or ("sender not whitelisted" if held else "")
            v.deposits[txid] = {"id": f"D{578755281141776384 + self.state.next_id()}", "txid": txid, "asset": asset,
                                "chain": chain, "amount": Decimal(str(amount)), "sender": sender, "status": "pending",
                                "reason": "", "time": _now_ms(),
                                "address": self.state.deposit_address(venue, asset, chain)}
        self.set_deposit_status(venue, txid, status, reason)

    def set_deposit_status(self, venue: str, txid: str, status: str, reason: str = "") -> None:
        if status not in {"credited", "pending", "held", "rejected"}:
            raise ValueError("status is one of credited, pending, held, rejected")
        with self.state.lock:
            v = self.state.venues[venue]
            d = v.deposits[txid]
            if status == "credited" and d["status"] != "credited":
                v.balances[d["asset"]] = v.balances.get(d["asset"], Decimal(0)) + d["amount"]
            d["status"], d["reason"] = status, reason

    def hold_deposit(self, venue: str, txid: str, reason: str = "sender not whitelisted") -> None:
        self.set_deposit_status(venue, txid, "held", reason)

    def release_deposit(self, venue: str, txid: str) -> None:
        self.set_deposit_status(venue, txid, "credited")

    # -- what happened --

    def executions(self, venue: str) -> list[Execution]:
        with self.state.lock:
            return list(self.state.venues[venue].executions.values())

    def requests(self, venue: str) -> list[tuple[str, str, int]]:
        with self.state.lock:
            return list(self.state.venues[venue].requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _credentials_from_env() -> dict[str, Credentials]:
    env = os.environ.get
    return {
        "hashkey": Credentials(env("HASHKEY_API_KEY") or secrets.token_hex(16),
                               env("HASHKEY_API_SECRET") or secrets.token_hex(32)),
        "osl": Credentials(env("OSL_API_KEY") or secrets.token_hex(16), env("OSL_API_SECRET") or secrets.token_hex(32),
                           env("OSL_API_PASSPHRASE") or secrets.token_urlsafe(12)),
    }


def start_exchange_emulator(port: int = 0, *, latency: float = 0.0, seed: int = 20250107, quote_ttl: float = 10.0,
                            credentials: dict[str, Credentials] | None = None,
                            market: ReplayMarket | None = None) -> tuple[str, EmulatorController]:
    """Start the emulator on 127.0.0.1 in a background thread; returns (base_url, controller).

    Credentials are generated for the run unless given (``controller.credentials['hashkey'|'osl']``).
    """
    creds = credentials or {
        "hashkey": Credentials(secrets.token_hex(16), secrets.token_hex(32)),
        "osl": Credentials(secrets.token_hex(16), secrets.token_hex(32), secrets.token_urlsafe(12)),
    }
    state = EmulatorState(seed=seed, latency=latency, quote_ttl=quote_ttl, credentials=creds, market=market)
    handler = type("EmulatorHandler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="exchange-emulator", daemon=True)
    thread.start()
    controller = EmulatorController(server, thread, state)
    return controller.base_url, controller


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="HashKey + OSL exchange emulator on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--quote-ttl", type=float, default=10.0, help="seconds a quote stays executable")
    parser.add_argument("--seed", type=int, default=20250107)
    args = parser.parse_args(argv)
    generated = not (os.environ.get("HASHKEY_API_SECRET") and os.environ.get("OSL_API_SECRET"))
    creds = _credentials_from_env()
    base_url, controller = start_exchange_emulator(args.port, latency=args.latency, seed=args.seed,
                                                   quote_ttl=args.quote_ttl, credentials=creds)
    print(f"Exchange emulator on {base_url}  (HashKey: {controller.hashkey_url}  OSL: {controller.osl_url})")
    print("Market: Bitstamp BTC/USD 1-minute data, 2025-01-07 (replayed by time of day); ETH, LTC synthetic.")
    if generated:
        # Throwaway credentials for this local run only, so a client can be pointed at it.
        print("Credentials generated for this run:")
        print(f"  export HASHKEY_API_KEY={creds['hashkey'].api_key} HASHKEY_API_SECRET={creds['hashkey'].secret}")
        print(f"  export OSL_API_KEY={creds['osl'].api_key} OSL_API_SECRET={creds['osl'].secret} "
              f"OSL_API_PASSPHRASE={creds['osl'].passphrase}")
    else:
        print("Credentials: from the environment.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
