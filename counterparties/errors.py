"""Errors raised by counterparty adapters.

Every error says three things the caller needs to decide what to do next:

* ``transient`` – ``True`` when the same call may succeed later (timeouts, 5xx, rate limits, lost
  connections); ``False`` when retrying the same request can never help (bad signature, validation,
  expired quote, insufficient balance, unknown order).
* ``code`` – one of :class:`ErrorCode`, the same for every venue, so the portal's logic does not depend on
  any venue's numbering. The venue's own code is kept in ``venue_code``.
* ``party`` – which counterparty said it (``"hashkey"``, ``"osl"``, ...).

:class:`IndeterminateResult` is the dangerous one: the request was sent and may have been carried out, but
no answer came back. The caller must resolve it by asking the counterparty with the idempotency key
(``order_status(client_order_id)``) and must never resend blindly with a new key.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Permanent: the same request will fail again.
    AUTH_FAILED = "AUTH_FAILED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    VALIDATION = "VALIDATION"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    INVALID_QUOTE = "INVALID_QUOTE"
    RFQ_CLOSED = "RFQ_CLOSED"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    ADDRESS_NOT_WHITELISTED = "ADDRESS_NOT_WHITELISTED"
    REJECTED = "REJECTED"
    BAD_RESPONSE = "BAD_RESPONSE"
    # Transient: worth another try later.
    TIMESTAMP_OUT_OF_WINDOW = "TIMESTAMP_OUT_OF_WINDOW"
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    CONNECTION = "CONNECTION"
    SERVER_ERROR = "SERVER_ERROR"
    CANNOT_PRICE = "CANNOT_PRICE"
    NO_QUOTES = "NO_QUOTES"
    INDETERMINATE = "INDETERMINATE"


class CounterpartyError(Exception):
    """Base class: never raised itself; catch it to handle every counterparty failure."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        party: str,
        code: ErrorCode | str,
        venue_code: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.party = party
        self.code = ErrorCode(code)
        self.venue_code = venue_code
        self.http_status = http_status
        # Seconds the counterparty asked us to wait (Retry-After), when it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        venue = f" ({self.venue_code})" if self.venue_code else ""
        return f"[{self.party}] {self.code}{venue}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self!s})"


class TransientError(CounterpartyError):
    """Worth a retry later (with a bound and backoff; honour ``retry_after`` when given)."""

    transient = True


class PermanentError(CounterpartyError):
    """Retrying the same request cannot help; a person or a new request is needed."""

    transient = False


class IndeterminateResult(TransientError):
    """The request was sent but we do not know whether it was carried out.

    Resolve it with the idempotency key (``order_status(client_order_id)`` for an accept, the withdrawal's
    ``client_ref`` for a withdrawal); a resend is only safe with the *same* key, because the counterparty
    treats a repeated key as the same order.
    """

    def __init__(self, message: str, *, party: str, operation: str, idempotency_key: str | None, **kwargs) -> None:
        kwargs.setdefault("code", ErrorCode.INDETERMINATE)
        super().__init__(message, party=party, **kwargs)
        self.operation = operation
        self.idempotency_key = idempotency_key
