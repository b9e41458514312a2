"""Bank adapters: how the portal reads statements from and sends payment orders to a bank.

Two ways in, one interface (BankAdapter): a drop folder (the bank's host-to-host SFTP share, mounted)
and an HTTP API. Every failure is a CounterpartyError that says whether a retry can help
(TransientError) or not (PermanentError). Payment orders carry their idempotency key twice: MsgId for
the order and EndToEndId (the portal's transfer reference) for each payment, so resending after a
crash or a lost answer can never pay twice as long as the same MsgId is reused.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from counterparties.errors import CounterpartyError, ErrorCode, IndeterminateResult, PermanentError, TransientError

from .iso20022 import PARTY, PaymentOrder, Statement, check_portal_id, parse_pain001, parse_statements

PART_SUFFIX = ".part"
MAX_RESPONSE_BYTES = 20 * 1024 * 1024


# ---------------------------------------------------------------------------------------------------
# What the adapters return


@dataclass(frozen=True)
class Rejected:
    """A document the bank delivered that could not be read: recorded by the caller, never retried."""

    source: str  # file name or remote id
    error: PermanentError


@dataclass
class StatementBatch:
    """What one poll brought in. Unpacks as ``statements, cursor`` (the interface's pair); documents that
    could not be read are in ``rejected`` so that they are recorded, not lost, and do not block the
    documents after them. Store ``cursor`` only after the statements and rejections are recorded."""

    statements: list[Statement]
    cursor: str | None
    rejected: list[Rejected] = field(default_factory=list)
    waiting_on: str | None = None  # a document still being written; it and those after it come next poll

    def __iter__(self):
        return iter((self.statements, self.cursor))


class PaymentState(StrEnum):
    UNKNOWN = "unknown"  # the bank has no such order: it never arrived (safe to submit again)
    SUBMITTED = "submitted"  # handed over (written to the drop folder), not yet acknowledged
    ACCEPTED = "accepted"  # the bank validated it and will execute it
    BOOKED = "booked"  # executed: the debit is on the account
    REJECTED = "rejected"  # refused by the bank; see reason


@dataclass(frozen=True)
class PaymentStatus:
    msg_id: str | None
    state: PaymentState
    end_to_end_ids: tuple[str, ...] = ()
    reason: str = ""
    location: str | None = None  # where the order is (file path or URL), for the record

    @property
    def known(self) -> bool:
        return self.state != PaymentState.UNKNOWN


class BankAdapter(ABC):
    """One bank, as the portal needs it."""

    party = PARTY

    @abstractmethod
    def statements_since(self, cursor: str | None) -> StatementBatch:
        """Statements and notifications delivered after ``cursor`` (None: from the beginning)."""

    @abstractmethod
    def submit_payment(self, pain001_bytes: bytes, msg_id: str) -> PaymentStatus:
        """Send a pain.001 whose GrpHdr/MsgId is ``msg_id``. Submitting the same order again is a no-op
        that answers the existing status; the same MsgId with different payments is a PermanentError."""

    @abstractmethod
    def payment_status(self, reference: str) -> PaymentStatus:
        """Status of an order by MsgId, or of the order holding a payment by its EndToEndId."""


def _checked_order(pain001_bytes: bytes, msg_id: str) -> PaymentOrder:
    check_portal_id(msg_id, "msg_id")
    order = parse_pain001(pain001_bytes)
    if order.msg_id != msg_id:
        raise PermanentError(f"msg_id {msg_id!r} does not match the order's GrpHdr/MsgId {order.msg_id!r}",
                             code=ErrorCode.VALIDATION, party=PARTY)
    return order


# ---------------------------------------------------------------------------------------------------
# Drop folder


class DropFolderBank(BankAdapter):
    """Statements arrive as files in ``inbox_dir``; payment orders are left in ``outbox_dir``.

    Reading: files are taken in name order (banks name them by sequence or time stamp) and the cursor is
    the last name taken. A name ending ``.part`` is a file still being written: it is not read, and the
    poll stops there, because skipping past it would move the cursor beyond its final name and lose it
    for good. Hidden files are ignored. A file that cannot be read or parsed is returned as rejected and
    the cursor moves past it, so one bad file does not block those after it.

    Writing: the order is written to a hidden ``.part`` file and linked into place under
    ``<msg_id>.xml``; linking refuses to overwrite, so two racing submitters cannot both publish. A copy
    is kept in ``<outbox>/.submitted`` (the bank's pickup ignores hidden entries) so that resubmitting
    after the bank has collected the file is still recognised as a repeat.
    """

    def __init__(self, inbox_dir: str | os.PathLike, outbox_dir: str | os.PathLike, *, max_files: int = 500):
        self.inbox = Path(inbox_dir)
        self.outbox = Path(outbox_dir)
        self.submitted = self.outbox / ".submitted"
        self.max_files = max_files

    # -- statements --------------------------------------------------------------------------------

    def _listing(self) -> list[str]:
        try:
            with os.scandir(self.inbox) as it:
                # Regular files only: a symlink in the bank's folder is not the bank's document.
                return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file(follow_symlinks=False))
        except OSError as exc:
            # The folder is a mounted share: missing or unreadable usually means the mount is down.
            raise TransientError(f"cannot list bank inbox {self.inbox}: {exc.strerror or exc}",
                                 code=ErrorCode.CONNECTION, party=PARTY) from exc

    def statements_since(self, cursor: str | None) -> StatementBatch:
        batch = StatementBatch(statements=[], cursor=cursor)
        # A .part file sorts by the name it will have, so "b.xml.part" holds back "c.xml" but not "a.xml".
        names = sorted(self._listing(), key=lambda n: n.removesuffix(PART_SUFFIX))
        taken = 0
        for name in names:
            final = name.removesuffix(PART_SUFFIX)
            if cursor is not None and final <= cursor:
                continue
            if name.endswith(PART_SUFFIX):
                batch.waiting_on = name
                break
            if taken >= self.max_files:
                break
            taken += 1
            batch.cursor = name
            try:
                raw = (self.inbox / name).read_bytes()
                batch.statements.extend(replace(s, source=name) for s in parse_statements(raw))
            except PermanentError as exc:
                batch.rejected.append(Rejected(name, _naming(exc, name)))
            except OSError as exc:
                batch.rejected.append(Rejected(name, PermanentError(
                    f"bank file {name} cannot be read: {exc.strerror or exc}", code=ErrorCode.BAD_RESPONSE,
                    party=PARTY)))
        return batch

    # -- payments ----------------------------------------------------------------------------------

    def _paths(self, msg_id: str) -> tuple[Path, Path, Path]:
        name = f"{msg_id}.xml"
        return self.outbox / name, self.submitted / name, self.submitted / f"{msg_id}.published"

    def submit_payment(self, pain001_bytes: bytes, msg_id: str) -> PaymentStatus:
        order = _checked_order(pain001_bytes, msg_id)
        published, record, marker = self._paths(msg_id)
        try:
            # Not parents=True: a missing outbox is an unmounted share, not a folder to create locally.
            self.submitted.mkdir(exist_ok=True)
            # 1. Claim the MsgId: the record is created only if absent.
            if not _publish(record, pain001_bytes):
                _same_order_or_conflict(record, order)
                if marker.exists():
                    return self._status(msg_id, order)
            # 2. Publish for the bank, then 3. note that it was published. A crash between 1 and 3 leads
            # here again: the file is published unless it is still there. (If the bank collected it in
            # that instant, its own duplicate-MsgId check is the last guard; banks reject a reused MsgId.)
            if not _publish(published, pain001_bytes):
                _same_order_or_conflict(published, order)
            _publish(marker, b"")
        except OSError as exc:
            raise TransientError(f"cannot write payment order {msg_id} to {self.outbox}: {exc}",
                                 code=ErrorCode.CONNECTION, party=PARTY) from exc
        return self._status(msg_id, order)

    def _status(self, msg_id: str, order: PaymentOrder) -> PaymentStatus:
        published, _, _ = self._paths(msg_id)
        return PaymentStatus(msg_id=msg_id, state=PaymentState.SUBMITTED,
                             end_to_end_ids=tuple(p.end_to_end_id for p in order.payments),
                             location=str(published))

    def payment_status(self, reference: str) -> PaymentStatus:
        """What this side knows: handed over or not. Execution shows up later in the statements (the
        debit carries the EndToEndId)."""
        if _safe_name(reference):
            _, record, marker = self._paths(reference)
            if record.exists() and marker.exists():
                return self._status(reference, parse_pain001(record.read_bytes()))
        try:
            records = sorted(self.submitted.glob("*.xml"))
        except OSError:
            records = []
        for path in records:
            if not (path.with_suffix(".published")).exists():
                continue
            try:
                order = parse_pain001(path.read_bytes())
            except (OSError, CounterpartyError):
                continue
            if any(p.end_to_end_id == reference for p in order.payments):
                return self._status(order.msg_id, order)
        return PaymentStatus(msg_id=None, state=PaymentState.UNKNOWN)


def _safe_name(value: str) -> bool:
    try:
        check_portal_id(value, "reference")
        return True
    except PermanentError:
        return False


def _naming(exc: PermanentError, name: str) -> PermanentError:
    return PermanentError(f"bank file {name}: {exc.message}", code=exc.code, party=PARTY)


def _publish(path: Path, content: bytes) -> bool:
    """Write ``path`` atomically if it does not exist; False if it already did. The content goes to a
    hidden .part file first, is flushed to disk, then hard-linked into place (a link never overwrites)."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{PART_SUFFIX}"
    with open(tmp, "xb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _same_order_or_conflict(existing: Path, order: PaymentOrder) -> None:
    try:
        previous = parse_pain001(existing.read_bytes())
    except PermanentError:
        previous = None
    if previous is None or not previous.same_instruction(order):
        raise PermanentError(f"MsgId {order.msg_id} was already submitted with different payments ({existing}); "
                             f"a new order needs a new MsgId", code=ErrorCode.VALIDATION, party=PARTY)


# ---------------------------------------------------------------------------------------------------
# HTTP


class HttpBank(BankAdapter):
    """A bank's HTTP API:

    - ``GET /statements?after=<cursor>`` → ``{"items": [{"id", "kind"}...], "cursor": <last id>}``,
      then ``GET /statements/<id>`` → the camt XML;
    - ``POST /payments`` with the pain.001 (``Idempotency-Key: <MsgId>``) → 201 new, 200 already had it,
      409 same MsgId with different payments;
    - ``GET /payments/<msg_id>`` or ``GET /payments?end_to_end_id=<id>`` → the status, 404 if unknown.

    Timeouts, connection failures, 5xx, 408 and 429 are TransientError; other 4xx are PermanentError.
    A POST that went out but whose answer was lost (timeout, dropped connection) raises
    IndeterminateResult (a TransientError): the caller asks ``payment_status(msg_id)`` and submits again
    only if the bank says UNKNOWN, with the same MsgId, so even a wrong guess cannot pay twice.
    Redirects are not followed, so the token never leaves this host.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, page_size: int = 100):
        parts = urlsplit(base_url)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bank URL {base_url!r} must be http(s)://host[:port][/path]")
        if parts.scheme == "http" and not loopback:
            raise ValueError("a bank outside this machine is reached over https only")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.page_size = page_size

    def __repr__(self):  # never the token
        return f"HttpBank({self.scheme}://{self.host}:{self.port}{self.prefix})"

    # -- transport ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, *, headers: dict | None = None,
                 ok=(200,), missing_ok: bool = False, idempotency_key: str | None = None) -> tuple[int, bytes]:
        """One request on a fresh connection. ``idempotency_key`` marks a request that changes something
        at the bank: if it went out and no answer came back, that is IndeterminateResult, not a retry."""
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        kwargs = {"context": ssl.create_default_context()} if self.scheme == "https" else {}
        conn = cls(self.host, self.port, timeout=self.timeout, **kwargs)
        what = f"{method} {path}"
        send_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json, application/xml",
                        **(headers or {})}

        def lost(message: str, code: ErrorCode) -> CounterpartyError:
            if idempotency_key is None:
                return TransientError(message, code=code, party=PARTY)
            return IndeterminateResult(f"{message}; resolve with payment_status({idempotency_key!r})",
                                       party=PARTY, operation=what, idempotency_key=idempotency_key)

        try:
            try:
                conn.connect()
            except ssl.SSLCertVerificationError as exc:
                raise PermanentError(f"bank certificate rejected ({what}): {exc.verify_message}",
                                     code=ErrorCode.AUTH_FAILED, party=PARTY) from exc
            except OSError as exc:
                # Nothing reached the bank: a plain retry is safe.
                raise TransientError(f"bank unreachable ({what}): {exc}", code=ErrorCode.CONNECTION,
                                     party=PARTY) from exc
            try:
                conn.request(method, self.prefix + path, body=body, headers=send_headers)
                response = conn.getresponse()
                status = response.status
                retry_after = response.getheader("Retry-After")
                data = response.read(MAX_RESPONSE_BYTES + 1)
            except TimeoutError as exc:
                raise lost(f"bank did not answer within {self.timeout}s ({what})", ErrorCode.TIMEOUT) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise lost(f"bank answer lost ({what}): {exc!r}", ErrorCode.CONNECTION) from exc
        finally:
            conn.close()
        if len(data) > MAX_RESPONSE_BYTES:
            raise PermanentError(f"bank answer to {what} is larger than {MAX_RESPONSE_BYTES} bytes",
                                 code=ErrorCode.BAD_RESPONSE, party=PARTY, http_status=status)
        if status in ok or (missing_ok and status == 404):
            return status, data
        detail, venue_code = _error_detail(data)
        message = f"bank answered {status} to {what}{detail}"
        extra = {"party": PARTY, "http_status": status, "venue_code": venue_code}
        if status >= 500:
            raise TransientError(message, code=ErrorCode.SERVER_ERROR, **extra)
        if status == 429:
            raise TransientError(message, code=ErrorCode.RATE_LIMITED, retry_after=_seconds(retry_after), **extra)
        if status == 408:
            raise TransientError(message, code=ErrorCode.TIMEOUT, **extra)
        code = {401: ErrorCode.AUTH_FAILED, 403: ErrorCode.PERMISSION_DENIED, 404: ErrorCode.UNKNOWN_ORDER,
                400: ErrorCode.VALIDATION, 409: ErrorCode.VALIDATION, 422: ErrorCode.VALIDATION}
        raise PermanentError(message, code=code.get(status, ErrorCode.REJECTED), **extra)

    def _json(self, data: bytes, what: str) -> dict:
        try:
            value = json.loads(data)
        except ValueError:
            raise PermanentError(f"bank answer to {what} is not JSON", code=ErrorCode.BAD_RESPONSE,
                                 party=PARTY) from None
        if not isinstance(value, dict):
            raise PermanentError(f"bank answer to {what} is not a JSON object", code=ErrorCode.BAD_RESPONSE,
                                 party=PARTY)
        return value

    # -- statements --------------------------------------------------------------------------------

    def statements_since(self, cursor: str | None) -> StatementBatch:
        query = urlencode({"after": cursor or "", "limit": self.page_size})
        _, data = self._request("GET", f"/statements?{query}")
        index = self._json(data, "GET /statements")
        items = index.get("items")
        if not isinstance(items, list):
            raise PermanentError("bank statement index has no item list", code=ErrorCode.BAD_RESPONSE, party=PARTY)
        batch = StatementBatch(statements=[], cursor=cursor)
        for item in items:
            doc_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(doc_id, str) or not doc_id:
                raise PermanentError("bank statement index has an item without an id", code=ErrorCode.BAD_RESPONSE,
                                     party=PARTY)
            # A transport failure here raises, and the cursor is not advanced: nothing is skipped.
            _, raw = self._request("GET", f"/statements/{quote(doc_id, safe='')}")
            try:
                batch.statements.extend(replace(s, source=doc_id) for s in parse_statements(raw))
            except PermanentError as exc:
                batch.rejected.append(Rejected(doc_id, PermanentError(
                    f"bank document {doc_id}: {exc.message}", code=exc.code, party=PARTY)))
            batch.cursor = doc_id
        return batch

    # -- payments ----------------------------------------------------------------------------------

    def submit_payment(self, pain001_bytes: bytes, msg_id: str) -> PaymentStatus:
        _checked_order(pain001_bytes, msg_id)
        _, data = self._request("POST", "/payments", pain001_bytes, ok=(200, 201), idempotency_key=msg_id,
                                headers={"Content-Type": "application/xml", "Idempotency-Key": msg_id})
        return self._status(self._json(data, "POST /payments"))

    def payment_status(self, reference: str) -> PaymentStatus:
        status, data = self._request("GET", f"/payments/{quote(reference, safe='')}", missing_ok=True)
        if status == 404:
            query = urlencode({"end_to_end_id": reference})
            status, data = self._request("GET", f"/payments?{query}", missing_ok=True)
        if status == 404:
            return PaymentStatus(msg_id=None, state=PaymentState.UNKNOWN)
        return self._status(self._json(data, f"GET /payments/{reference}"))

    def _status(self, body: dict) -> PaymentStatus:
        try:
            state = PaymentState(body.get("state"))
        except ValueError:
            state = None
        if state in (None, PaymentState.UNKNOWN):
            raise PermanentError(f"bank reports unknown payment state {body.get('state')!r}",
                                 code=ErrorCode.BAD_RESPONSE, party=PARTY)
        return PaymentStatus(msg_id=body.get("msg_id"), state=state,
                             end_to_end_ids=tuple(body.get("end_to_end_ids") or ()),
                             reason=body.get("reason") or "",
                             location=f"{self.scheme}://{self.host}:{self.port}{self.prefix}/payments/"
                                      f"{quote(str(body.get('msg_id')), safe='')}")


def _error_detail(data: bytes) -> tuple[str, str | None]:
    try:
        body = json.loads(data)
    except ValueError:
        return "", None
    if isinstance(body, dict) and body.get("error"):
        return f": {str(body['error'])[:500]}", (str(body["code"])[:50] if body.get("code") else None)
    return "", None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: the caller's own backoff applies
