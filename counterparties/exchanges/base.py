"""What every exchange adapter offers, and the HTTP plumbing they share.

Amounts: coin quantities are integers in base units (satoshi, wei, litoshi); prices, fees and proceeds are
``Decimal``. Venues speak decimal strings; the adapters convert at the edge and refuse a venue amount that
does not fit the asset's decimals instead of rounding it.

Evidence: every HTTP exchange with a venue is handed to the optional ``recorder`` as a
:class:`MessageRecord` (method, URL, headers, bodies, status, timings and a SHA-256 over the request and
response). API keys, passphrases and signatures are replaced by ``[redacted]`` before the record is made,
so a record can be stored and shown to auditors as it is.

Idempotency: every call that changes something at the venue carries a client id (RFQ client id, client
order id, withdrawal client id). A lost answer on such a call raises
:class:`~counterparties.errors.IndeterminateResult`; the caller asks again with the same id.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import requests
from requests.adapters import HTTPAdapter

from counterparties.errors import (
    CounterpartyError,
    ErrorCode,
    IndeterminateResult,
    PermanentError,
    TransientError,
)

REDACTED = "[redacted]"

# Decimals of the assets the portal handles (the same numbers as the portal's asset table). An adapter can
# be given its own mapping; `request_quote` also takes `decimals` explicitly and checks it against this.
DEFAULT_DECIMALS: Mapping[str, int] = {"BTC": 8, "LTC": 8, "ETH": 18, "USDT": 6, "USD": 2, "HKD": 2}


class Side(StrEnum):
    SELL = "sell"
    BUY = "buy"


class OrderStatus(StrEnum):
    PENDING = "pending"  # accepted, nothing filled yet
    PARTIALLY_FILLED = "partially_filled"  # see Order.final: whether the rest can still fill
    FILLED = "filled"
    FAILED = "failed"  # rejected or cancelled with nothing filled


class DepositStatus(StrEnum):
    CREDITED = "credited"
    PENDING = "pending"
    # The venue holds the coins until the sender address is verified or whitelisted (Travel Rule / AML).
    HELD_UNVERIFIED = "held_unverified"
    REJECTED = "rejected"  # refused, refunding or refunded


class WithdrawalStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Quote:
    party: str
    # Opaque reference the adapter can accept later; at most 100 characters (the portal's Quote.reference).
    quote_id: str
    symbol: str
    side: Side
    price: Decimal  # per whole coin, in the quote currency
    quantity: int  # base units
    expires_at: datetime
    quoted_at: datetime
    provider: str | None = None  # the liquidity provider behind the quote, when the venue says
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires_at


@dataclass(frozen=True)
class Fill:
    trade_id: str
    quantity: int  # base units
    price: Decimal
    gross: Decimal  # in the quote currency
    fee: Decimal
    fee_currency: str
    executed_at: datetime


@dataclass(frozen=True)
class Order:
    party: str
    client_order_id: str
    status: OrderStatus
    requested_base_units: int
    filled_base_units: int
    avg_price: Decimal | None
    fees: Decimal
    fee_currency: str | None
    fills: tuple[Fill, ...] = ()
    # True when nothing more will fill (filled, failed, or partially filled with the rest cancelled).
    final: bool = False
    order_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def gross(self) -> Decimal:
        return sum((f.gross for f in self.fills), Decimal(0))

    @property
    def unfilled_base_units(self) -> int:
        return self.requested_base_units - self.filled_base_units


@dataclass(frozen=True)
class Deposit:
    party: str
    txid: str
    asset: str
    status: DepositStatus
    amount: Decimal  # as the venue reports it (whole coins); see `amount_base_units`
    venue_status: str = ""
    reason: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def amount_base_units(self, decimals: int) -> int:
        return to_base_units(self.amount, decimals)


@dataclass(frozen=True)
class Withdrawal:
    party: str
    client_ref: str
    withdrawal_id: str
    status: WithdrawalStatus
    amount_base_units: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# Fields the SHA-256 of a MessageRecord covers, in this order of keys (JSON, sorted keys, compact).
HASHED_FIELDS = ("party", "method", "url", "request_headers", "request_body", "response_status", "response_body")


@dataclass(frozen=True)
class MessageRecord:
    """One request/response with a venue, redacted, ready to be stored as evidence.

    ``sha256`` is ``sha256(json.dumps({f: record[f] for f in HASHED_FIELDS}, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False).encode())``: anyone holding the record can recompute it.
    ``response_status`` is ``None`` and ``error`` says why when no answer came back.
    """

    party: str
    operation: str
    method: str
    url: str
    request_headers: Mapping[str, str]
    request_body: str
    response_status: int | None
    response_headers: Mapping[str, str]
    response_body: str | None
    started_at: str  # ISO 8601, UTC
    elapsed_ms: float
    error: str | None
    idempotency_key: str | None
    sha256: str

    @staticmethod
    def digest(fields: Mapping[str, Any]) -> str:
        doc = {name: fields[name] for name in HASHED_FIELDS}
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def verify(self) -> bool:
        return self.digest(self.__dict__) == self.sha256


Recorder = Callable[[MessageRecord], None]


@runtime_checkable
class ExchangeAdapter(Protocol):
    """The calls the portal makes on a licensed platform, whatever its API looks like."""

    party: str

    def request_quote(self, symbol: str, side: str, quantity_base_units: int, decimals: int,
                      client_ref: str) -> Quote: ...

    def request_quotes(self, symbol: str, side: str, quantity_base_units: int, decimals: int,
                       client_ref: str) -> list[Quote]: ...

    def accept_quote(self, quote_id: str, client_order_id: str) -> Order: ...

    def decline_quote(self, quote_id: str) -> None: ...

    def order_status(self, client_order_id: str) -> Order: ...

    def deposit_address(self, asset: str, chain: str) -> str: ...

    def deposit_status(self, txid: str) -> Deposit: ...

    def withdraw(self, asset: str, chain: str, address: str, amount: int, client_ref: str) -> Withdrawal: ...


# ---- amounts ----------------------------------------------------------------------------------------


def to_decimal_string(base_units: int, decimals: int) -> str:
    """Base units as the venue's decimal string: 150000000, 8 → '1.50000000'."""
    if not isinstance(base_units, int) or isinstance(base_units, bool):
        raise TypeError("amounts in base units must be int")
    with localcontext() as ctx:
        ctx.prec = 80
        return format(Decimal(base_units).scaleb(-decimals), "f")


def to_base_units(amount: str | Decimal, decimals: int) -> int:
    """A venue's decimal amount in base units; refuses anything finer than the asset's decimals."""
    with localcontext() as ctx:
        ctx.prec = 80
        value = Decimal(str(amount)).scaleb(decimals)
        if value != value.to_integral_value():
            raise ValueError(f"{amount} has more than {decimals} decimals")
        return int(value)


def parse_symbol(symbol: str) -> tuple[str, str]:
    """'BTC/USD' (or 'BTC-USD') → ('BTC', 'USD')."""
    parts = re.split(r"[/\-]", symbol.strip().upper())
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"symbol must look like 'BTC/USD', got {symbol!r}")
    return parts[0], parts[1]


def venue_decimal(value: Any, *, party: str, default: Decimal = Decimal(0)) -> Decimal:
    """A number the venue sent, as Decimal. Absent gives `default`; malformed is a
    BAD_RESPONSE error, never a silent zero in a price, a fee or a deposit amount."""
    if value is None or value == "":
        return default
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise PermanentError(f"malformed number from the venue: {str(value)[:40]!r}", party=party,
                             code=ErrorCode.BAD_RESPONSE)
    return number


def parse_venue_time(value: Any) -> datetime:
    """Epoch seconds or milliseconds (venues use both) → aware UTC datetime."""
    number = float(value)
    if number > 1e11:  # milliseconds
        number /= 1000.0
    return datetime.fromtimestamp(number, tz=UTC)


# ---- HTTP plumbing ------------------------------------------------------------------------------------


def _not_sent(exc: BaseException) -> bool:
    """True when the request never reached the server (refused or timed out while connecting)."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (NewConnectionError, ConnectTimeoutError)):
            return True
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return False


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    text: str
    data: Any  # parsed JSON, or None when the body is not JSON


class SignedHttpClient:
    """Session, timeouts, recording and the transport-level failure rules shared by the adapters.

    Transport rules, the same for every venue:

    * the connection could not be made → ``TransientError(CONNECTION)`` (nothing was sent);
    * no answer in time / connection lost after sending → ``IndeterminateResult`` for a call that changes
      something (``mutating=True``), ``TransientError(TIMEOUT|CONNECTION)`` for a read;
    * HTTP 429 → ``TransientError(RATE_LIMITED)`` with ``retry_after`` from ``Retry-After``;
    * HTTP 5xx → ``IndeterminateResult`` for a mutating call (the venue may have done it before failing),
      ``TransientError(SERVER_ERROR)`` for a read.

    Venue-specific error bodies are mapped by the subclass (`_raise_for_venue_error`). The session never
    retries on its own: a silent resend of an order is exactly what must not happen.
    """

    party = "exchange"
    # Header names whose values never reach a record, a log or an exception message.
    SECRET_HEADERS: frozenset[str] = frozenset()
    SECRET_QUERY_PARAMS: frozenset[str] = frozenset()

    def __init__(
        self,
        base_url: str,
        *,
        recorder: Recorder | None = None,
        timeout: tuple[float, float] = (3.05, 15.0),
        session: requests.Session | None = None,
        asset_decimals: Mapping[str, int] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.recorder = recorder
        self.timeout = timeout  # (connect, read) seconds
        self.asset_decimals = dict(DEFAULT_DECIMALS if asset_decimals is None else asset_decimals)
        self.session = session or requests.Session()
        no_retries = HTTPAdapter(max_retries=0)
        self.session.mount("http://", no_retries)
        self.session.mount("https://", no_retries)
        self._scrub_values: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never show credentials
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- helpers for subclasses --

    def decimals_for(self, asset: str, given: int | None = None) -> int:
        known = self.asset_decimals.get(asset.upper())
        if given is not None:
            if known is not None and known != given:
                raise ValueError(f"{asset} has {known} decimals, not {given}")
            return given
        if known is None:
            raise ValueError(f"decimals of {asset} unknown: pass asset_decimals")
        return known

    def _scrub(self, text: str | None, extra: tuple[str, ...] = ()) -> str | None:
        if text is None:
            return None
        for value in (*self._scrub_values, *extra):
            if value:
                text = text.replace(value, REDACTED)
        return text

    def _redact_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        secret = {h.lower() for h in self.SECRET_HEADERS}
        return {k: (REDACTED if k.lower() in secret else v) for k, v in headers.items()}

    def _redact_query(self, query: str) -> str:
        if not query:
            return ""
        parts = []
        for part in query.split("&"):
            name = part.split("=", 1)[0]
            parts.append(f"{name}={REDACTED}" if name in self.SECRET_QUERY_PARAMS else part)
        return "&".join(parts)

    def _emit(self, record: MessageRecord) -> None:
        if self.recorder is not None:
            self.recorder(record)

    def _request(
        self,
        *,
        operation: str,
        method: str,
        path: str,
        query: str = "",
        body: str = "",
        headers: Mapping[str, str],
        mutating: bool,
        idempotency_key: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> Response:
        """Send one request, record it, apply the transport rules; return the parsed response."""
        url = self.base_url + path + (f"?{query}" if query else "")
        shown_url = self.base_url + path + (f"?{self._redact_query(query)}" if query else "")
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        status: int | None = None
        resp_headers: dict[str, str] = {}
        text: str | None = None
        failure: requests.RequestException | None = None
        try:
            resp = self.session.request(
                method, url, data=body.encode("utf-8") if body else None, headers=dict(headers),
                timeout=self.timeout, allow_redirects=False,
            )
            status, resp_headers, text = resp.status_code, dict(resp.headers), resp.text
        except requests.RequestException as exc:
            failure = exc
        elapsed_ms = round((time.perf_counter() - t0) * 1000, 3)
        error = self._scrub(f"{type(failure).__name__}: {failure}", secrets) if failure else None
        fields = {
            "party": self.party,
            "operation": operation,
            "method": method,
            "url": self._scrub(shown_url, secrets),
            "request_headers": self._redact_headers(headers),
            "request_body": self._scrub(body, secrets) or "",
            "response_status": status,
            "response_headers": resp_headers,
            "response_body": text,
            "started_at": started.isoformat(),
            "elapsed_ms": elapsed_ms,
            "error": error,
            "idempotency_key": idempotency_key,
        }
        self._emit(MessageRecord(**fields, sha256=MessageRecord.digest(fields)))

        if failure is not None:
            self._raise_transport(failure, error or "", operation, mutating, idempotency_key)
        assert status is not None and text is not None
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        response = Response(status=status, headers=resp_headers, text=text, data=data)
        # The venue's own error shape first: it carries a more precise code than the HTTP status.
        self._raise_for_venue_error(response, operation=operation, mutating=mutating,
                                    idempotency_key=idempotency_key)
        if status == 429:
            raise TransientError("rate limited", party=self.party, code=ErrorCode.RATE_LIMITED,
                                 http_status=status, retry_after=_retry_after(resp_headers))
        if status >= 500:
            self._raise_server_error(response, operation, mutating, idempotency_key)
        if status >= 400 or data is None:
            raise PermanentError(f"unexpected answer to {operation}: HTTP {status}", party=self.party,
                                 code=ErrorCode.BAD_RESPONSE, http_status=status)
        return response

    def _raise_transport(self, exc: requests.RequestException, description: str, operation: str,
                         mutating: bool, idempotency_key: str | None) -> None:
        if _not_sent(exc):
            raise TransientError(f"could not connect: {description}", party=self.party,
                                 code=ErrorCode.CONNECTION) from None
        if mutating:
            raise IndeterminateResult(
                f"{operation} sent but no answer ({description}); resolve with the idempotency key "
                f"{idempotency_key!r}, do not resend with a new one",
                party=self.party, operation=operation, idempotency_key=idempotency_key,
            ) from None
        code = ErrorCode.TIMEOUT if isinstance(exc, requests.Timeout) else ErrorCode.CONNECTION
        raise TransientError(description, party=self.party, code=code) from None

    def _raise_server_error(self, response: Response, operation: str, mutating: bool,
                            idempotency_key: str | None) -> None:
        if mutating:
            raise IndeterminateResult(
                f"{operation} answered HTTP {response.status}: it may or may not have been carried out",
                party=self.party, operation=operation, idempotency_key=idempotency_key,
                http_status=response.status,
            )
        raise TransientError(f"HTTP {response.status}", party=self.party, code=ErrorCode.SERVER_ERROR,
                             http_status=response.status, retry_after=_retry_after(response.headers))

    def _raise_for_venue_error(self, response: Response, *, operation: str, mutating: bool,
                               idempotency_key: str | None) -> None:
        """Subclasses raise the mapped CounterpartyError for a venue error body; default: nothing."""

    def _error(self, cls: type[CounterpartyError], message: str, code: ErrorCode, *, venue_code: Any = None,
               response: Response | None = None, **kwargs) -> CounterpartyError:
        return cls(
            message, party=self.party, code=code,
            venue_code=None if venue_code is None else str(venue_code),
            http_status=response.status if response is not None else None,
            retry_after=_retry_after(response.headers) if response is not None else None,
            **kwargs,
        )


def best_first(quotes: list[Quote], side: Side) -> list[Quote]:
    """Best price first: highest bid when we sell, lowest offer when we buy."""
    return sorted(quotes, key=lambda q: q.price, reverse=(side == Side.SELL))
