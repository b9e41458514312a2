"""A local bank for tests and the demo: accounts, camt.054/camt.053 out, pain.001 in.

It holds the accounts the money passes through (the agency's same-name offshore USD/HKD account, the
bureau's special case-funds account in CNY, the treasury's account), books credits, FX conversions
(结汇) and the portal's payment orders, and reports every booking as a camt.054 notification and each
day as a camt.053 statement. Documents are served over HTTP on 127.0.0.1 (the API ``HttpBank`` speaks)
and, with a drop folder, also written to ``<drop_dir>/inbox`` while orders are collected from
``<drop_dir>/outbox`` (what ``DropFolderBank`` reads and writes).

    base_url, bank = start_bank_emulator(drop_dir="var/bank")
    bank.credit("HK-012-345678-838", Decimal("1000000.00"), "USD", end_to_end_id="SALE-1")
    bank.convert("HK-012-345678-838", "USD", Decimal("1000000.00"), Decimal("7.1234"), "110-CASEFUNDS")
    bank.fail_next("lost_response", on="POST /payments")
    bank.book_payments()
    bank.issue_statements()

Demo: ``python -m emulators.bank --port 8702 --drop-dir var/bank`` (control endpoints under
``/_control/``, see ``_CONTROL``). Faults: ``timeout`` (the answer comes too late), ``500`` (refused
without doing anything) and ``lost_response`` (done, but the connection drops before the answer) on the
HTTP API; ``fx_reject`` refuses the next FX settlement when its order comes to be booked.

The portal's two payment orders, and what the bank reports for them:

* **FX settlement (结汇).** A pain.001 in USD (or HKD) from a foreign-currency account to an account held here
  in CNY (the bureau's special case-funds account) is not a transfer but a conversion. When
  ``book_payments`` comes to it, the bank waits for the "FX approval" (at once by default; ``fx_approval_delay``
  seconds after receipt if set), then converts at the rate set with ``set_fx_rate(ccy, rate)`` through
  ``convert()``. Both legs, the foreign debit and the CNY credit, are camt.054 notifications whose
  Refs/EndToEndId is the payment's EndToEndId and whose AmtDtls carry the CcyXchg (rate, both amounts).
  Where the portal finds what ``fx_record_approval`` needs:

  - the SAFE approval reference: ``SAFE=<ref>`` in the entry's AddtlNtryInf;
  - the balance-of-payments declaration number: ``BOP=<no>`` in the entry's AddtlNtryInf;
  - the conversion slip (结汇水单) reference: CcyXchg/CtrctId (the legs' AcctSvcrRef are it plus ``-D``/``-C``);
  - the rate and the CNY amount: CcyXchg/XchgRate and the CNY amount of AmtDtls (the credit leg's Amt).

  A refused approval (``fail_next("fx_reject", reason=...)``, or no rate set) books nothing: the order's
  status becomes ``rejected`` with the reason, as ``payment_status`` reports it.
* **Treasury remittance.** A CNY payment to an account opened with ``open_treasury_account`` is booked as a
  debit and a credit whose AddtlNtryInf carries the treasury's receipt as ``RECEIPT=<ref>``; the remittance
  information (the payment code) is passed through as RmtInf/Ustrd.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import threading
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from counterparties.banks.iso20022 import (
    NS_CAMT053,
    NS_CAMT054,
    PaymentOrder,
    format_amount,
    minor_units,
    parse_pain001,
)
from counterparties.errors import PermanentError

FAULT_KINDS = ("timeout", "500", "lost_response", "fx_reject")
BANK_BIC = "EMULHKHHXXX"
MAX_BODY = 5 * 1024 * 1024


@dataclass
class Booking:
    """One entry on one account, as the bank booked it."""

    seq: int
    account: str
    amount: Decimal
    currency: str
    credit: bool
    booking_date: date
    value_date: date
    bank_ref: str
    end_to_end_id: str | None = None
    remittance: str | None = None
    additional_info: str | None = None
    counterparty: str | None = None
    # (source ccy, target ccy, rate per source unit, source amount, target amount, contract id)
    fx: tuple | None = None
    family: tuple[str, str, str] = ("PMNT", "RCDT", "XBCT")


@dataclass
class Account:
    number: str
    currency: str
    owner: str
    bookings: list[Booking] = field(default_factory=list)

    def balance(self, before: date | None = None) -> Decimal:
        return sum((b.amount if b.credit else -b.amount for b in self.bookings
                    if before is None or b.booking_date < before), Decimal(0))


@dataclass
class Document:
    id: str
    kind: str  # camt053 | camt054
    account: str | None
    xml: bytes


@dataclass
class Order:
    order: PaymentOrder
    raw: bytes
    state: str = "accepted"
    reason: str = ""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict:
        return {"msg_id": self.order.msg_id, "state": self.state, "reason": self.reason,
                "end_to_end_ids": [p.end_to_end_id for p in self.order.payments],
                "ctrl_sum": str(self.order.ctrl_sum), "nb_of_txs": self.order.nb_of_txs}


@dataclass
class Fault:
    kind: str
    on: str | None
    delay: float


class OrderRefused(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.code = status, code


def _money(value, currency: str, what: str) -> Decimal:
    """Amounts come in as Decimal or text; a float would already have lost the cents."""
    if isinstance(value, float):
        raise TypeError(f"{what} must be a Decimal or a string, not a float")
    amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    format_amount(amount, currency, what)  # positive, and no more decimals than the currency has
    return amount


class BankEmulator:
    """The controller: the bank's books, its documents, its payment orders and the faults to inject."""

    def __init__(self, *, drop_dir: str | os.PathLike | None = None, token: str | None = None,
                 today: date | None = None):
        self.token = token
        self.today = today or date.today()
        self.accounts: dict[str, Account] = {}
        self.documents: list[Document] = []
        self.orders: dict[str, Order] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) as received, for tests
        self._faults: deque[Fault] = deque()
        # FX settlement: CNY per unit of each foreign currency, the approval's delay, refusals to come.
        self.fx_rates: dict[str, Decimal] = {}
        self.fx_approval_delay = 0.0
        self._fx_rejections: deque[tuple[str | None, str]] = deque()
        self.treasury_accounts: set[str] = set()
        self._seq = itertools.count(1)
        # Ids and references carry the start time, so a restarted emulator neither reuses a bank reference
        # (the portal dedups on it) nor writes document names that sort before a cursor already stored.
        self.run = datetime.now(UTC).strftime("%y%m%d%H%M%S")
        self._lock = threading.RLock()
        self.stopping = threading.Event()
        self.drop_dir = Path(drop_dir) if drop_dir else None
        if self.drop_dir:
            for sub in ("inbox", "outbox", "processed", "rejected"):
                (self.drop_dir / sub).mkdir(parents=True, exist_ok=True)
        self._server: ThreadingHTTPServer | None = None

    # -- accounts and bookings -----------------------------------------------------------------

    def open_account(self, number: str, currency: str, owner: str = "") -> Account:
        with self._lock:
            account = self.accounts.get(number)
            if account is None:
                account = self.accounts[number] = Account(number, currency, owner or number)
            elif account.currency != currency:
                raise ValueError(f"account {number} is held in {account.currency}, not {currency}")
            return account

    def balance(self, number: str) -> Decimal:
        with self._lock:
            return self.accounts[number].balance()

    def _book(self, account: Account, amount: Decimal, credit: bool, *, bank_ref: str | None = None,
              value_date: date | None = None, **details) -> Booking:
        seq = next(self._seq)
        ref = bank_ref or f"EMU{self.run}{seq:06d}"
        if any(b.bank_ref == ref for a in self.accounts.values() for b in a.bookings):
            raise ValueError(f"bank reference {ref} is already booked")
        booking = Booking(seq=seq, account=account.number, amount=amount, currency=account.currency, credit=credit,
                          booking_date=self.today, value_date=value_date or self.today, bank_ref=ref, **details)
        account.bookings.append(booking)
        self._emit("camt054", account.number, _camt054(self, account, booking))
        return booking

    def credit(self, account: str, amount, currency: str, bank_ref: str | None = None,
               end_to_end_id: str | None = None, remittance: str | None = None, *, value_date: date | None = None,
               additional_info: str | None = None, debtor: str | None = None) -> Booking:
        """An incoming transfer (e.g. sale proceeds from the platform) onto ``account``."""
        with self._lock:
            acct = self.open_account(account, currency)
            return self._book(acct, _money(amount, currency, "credit amount"), True, bank_ref=bank_ref,
                              value_date=value_date, end_to_end_id=end_to_end_id, remittance=remittance,
                              additional_info=additional_info, counterparty=debtor)

    def debit(self, account: str, amount, currency: str, bank_ref: str | None = None, *,
              additional_info: str | None = None, remittance: str | None = None) -> Booking:
        """A charge or other debit the bank makes itself."""
        with self._lock:
            acct = self.open_account(account, currency)
            amount = _money(amount, currency, "debit amount")
            return self._book(acct, amount, False, bank_ref=bank_ref, additional_info=additional_info,
                              remittance=remittance, family=("ACMT", "MDOP", "CHRG"))

    def convert(self, account: str, source_ccy: str, amount, rate, target_account_cny: str, *,
                target_ccy: str = "CNY", bank_ref: str | None = None, end_to_end_id: str | None = None,
                remittance: str | None = None, contract_id: str | None = None,
                approval_reference: str | None = None, bop_declaration_no: str | None = None
                ) -> tuple[Booking, Booking]:
        """结汇: debit ``amount`` in ``source_ccy`` and credit the CNY equivalent (rounded half-up to fen)
        to ``target_account_cny``. Both legs carry the exchange details (CcyXchg) and, when given, the SAFE
        approval and BoP declaration as ``SAFE=`` and ``BOP=`` in AddtlNtryInf."""
        with self._lock:
            source = self.open_account(account, source_ccy)
            target = self.open_account(target_account_cny, target_ccy)
            amount = _money(amount, source_ccy, "conversion amount")
            if isinstance(rate, float):
                raise TypeError("the rate must be a Decimal or a string, not a float")
            rate = Decimal(str(rate))
            if not rate.is_finite() or rate <= 0:
                raise ValueError("the rate must be positive")
            if source.balance() < amount:
                raise ValueError(f"account {account} holds {source.balance()} {source_ccy}, less than {amount}")
            step = Decimal(1).scaleb(-minor_units(target_ccy))
            converted = (amount * rate).quantize(step, rounding=ROUND_HALF_UP)
            ref = bank_ref or f"FX{self.run}{next(self._seq):06d}"
            fx = (source_ccy, target_ccy, rate, amount, converted, contract_id or ref)
            info = f"FX SETTLEMENT {source_ccy}/{target_ccy} {rate}"
            if approval_reference:
                info += f" SAFE={approval_reference}"
            if bop_declaration_no:
                info += f" BOP={bop_declaration_no}"
            debit = self._book(source, amount, False, bank_ref=f"{ref}-D", end_to_end_id=end_to_end_id,
                               remittance=remittance, additional_info=info, fx=fx, family=("FORX", "SPOT", "SPOT"))
            credit = self._book(target, converted, True, bank_ref=f"{ref}-C", end_to_end_id=end_to_end_id,
                                remittance=remittance, additional_info=info, fx=fx, counterparty=source.owner,
                                family=("FORX", "SPOT", "SPOT"))
            return debit, credit

    # -- documents -----------------------------------------------------------------------------

    def _emit(self, kind: str, account: str | None, xml: bytes) -> Document:
        doc = Document(id=f"{self.run}-{next(self._seq):06d}-{kind}", kind=kind, account=account, xml=xml)
        self.documents.append(doc)
        if self.drop_dir:
            # Written as <id>.xml.part and renamed, as a bank's host-to-host upload does.
            final = self.drop_dir / "inbox" / f"{doc.id}.xml"
            part = final.with_name(final.name + ".part")
            part.write_bytes(xml)
            os.replace(part, final)
        return doc

    def inject_document(self, xml: bytes, kind: str = "camt054") -> Document:
        """Deliver arbitrary bytes as the next document (a corrupt file from the bank, for tests)."""
        with self._lock:
            return self._emit(kind, None, xml)

    def issue_statements(self, day: date | None = None, accounts: list[str] | None = None) -> list[Document]:
        """The end-of-day camt.053 for each account (or those named), with opening and closing balances."""
        day = day or self.today
        with self._lock:
            return [self._emit("camt053", n, _camt053(self, self.accounts[n], day))
                    for n in (accounts or sorted(self.accounts))]

    def documents_after(self, cursor: str | None, limit: int = 100) -> list[Document]:
        with self._lock:
            return [d for d in self.documents if not cursor or d.id > cursor][:limit]

    def document(self, doc_id: str) -> Document | None:
        with self._lock:
            return next((d for d in self.documents if d.id == doc_id), None)

    # -- payment orders --------------------------------------------------------------------------

    def receive_order(self, raw: bytes, idempotency_key: str | None = None) -> tuple[Order, bool]:
        """Validate and accept a pain.001. Returns (order, created); the same MsgId again with the same
        payments is the same order (created False); with other payments, or a reused EndToEndId, it is
        refused."""
        try:
            order = parse_pain001(raw)
        except PermanentError as exc:
            raise OrderRefused(400, exc.message, "INVALID") from None
        if idempotency_key is not None and idempotency_key != order.msg_id:
            raise OrderRefused(400, f"Idempotency-Key {idempotency_key} is not the MsgId {order.msg_id}", "KEY")
        with self._lock:
            existing = self.orders.get(order.msg_id)
            if existing is not None:
                if existing.order.same_instruction(order):
                    return existing, False
                raise OrderRefused(409, f"MsgId {order.msg_id} was used for a different order", "DUPLICATE_MSGID")
            debtor = self.accounts.get(order.debtor.account)
            if debtor is None:
                raise OrderRefused(422, f"debtor account {order.debtor.account} is not held here", "NO_ACCOUNT")
            for p in order.payments:
                if p.currency != debtor.currency:
                    raise OrderRefused(422, f"payment {p.end_to_end_id} is in {p.currency}; the account is in "
                                            f"{debtor.currency}", "CURRENCY")
                for other in self.orders.values():
                    if any(q.end_to_end_id == p.end_to_end_id for q in other.order.payments):
                        raise OrderRefused(409, f"EndToEndId {p.end_to_end_id} was already instructed in "
                                                f"{other.order.msg_id}", "DUPLICATE_E2E")
            entry = self.orders[order.msg_id] = Order(order=order, raw=raw)
            return entry, True

    def book_payments(self) -> list[Order]:
        """Execute the accepted orders: debit the payer, credit the creditor's account here (the treasury), or,
        for a foreign-currency payment into a CNY account here, convert it (结汇) once the FX approval is in."""
        done = []
        with self._lock:
            for entry in self.orders.values():
                if entry.state != "accepted":
                    continue
                order = entry.order
                debtor = self.accounts[order.debtor.account]
                fx = [p for p in order.payments if self._is_fx(p)]
                if fx and (datetime.now(UTC) - entry.received_at).total_seconds() < self.fx_approval_delay:
                    continue  # SAFE has not answered yet: the order stays accepted
                total = sum((p.amount for p in order.payments), Decimal(0))
                reason = ""
                if debtor.balance() < total:
                    reason = f"insufficient funds: {debtor.balance()} < {total}"
                for p in order.payments:
                    held = self.accounts.get(p.creditor_account)
                    if held is not None and held.currency != p.currency and p not in fx:
                        reason = f"creditor account {p.creditor_account} is held in {held.currency}"
                    elif p in fx and p.currency not in self.fx_rates:
                        reason = f"FX not approved: no {p.currency}/{held.currency} rate is quoted"
                if fx and not reason:
                    refusal = self._take_fx_rejection(order)
                    if refusal is not None:
                        reason = f"FX not approved: {refusal}"
                if reason:  # refused as a whole, before anything is booked
                    entry.state, entry.reason = "rejected", reason
                    done.append(entry)
                    continue
                for p in order.payments:
                    if p in fx:
                        seq = next(self._seq)
                        self.convert(debtor.number, p.currency, p.amount, self.fx_rates[p.currency],
                                     p.creditor_account, end_to_end_id=p.end_to_end_id, remittance=p.remittance,
                                     approval_reference=f"SAFE-{self.run}-{seq:06d}",
                                     bop_declaration_no=f"BOP{self.run}{seq:06d}")
                        continue
                    info = f"PAYMENT {order.msg_id} TO {p.creditor_name}"
                    if p.creditor_account in self.treasury_accounts:
                        info += f" RECEIPT=GK{self.run}{next(self._seq):06d}"  # the treasury's receipt (国库回执)
                    self._book(debtor, p.amount, False, end_to_end_id=p.end_to_end_id, remittance=p.remittance,
                               counterparty=p.creditor_name, family=("PMNT", "ICDT", "DMCT"), additional_info=info)
                    creditor = self.open_account(p.creditor_account, p.currency, p.creditor_name)
                    self._book(creditor, p.amount, True, end_to_end_id=p.end_to_end_id, remittance=p.remittance,
                               counterparty=order.debtor.name, family=("PMNT", "RCDT", "DMCT"),
                               additional_info=info if p.creditor_account in self.treasury_accounts else None)
                entry.state = "booked"
                done.append(entry)
        return done

    def _is_fx(self, payment) -> bool:
        """A foreign-currency payment into a CNY account held here is a conversion, not a transfer."""
        held = self.accounts.get(payment.creditor_account)
        return held is not None and held.currency == "CNY" and payment.currency != "CNY"

    def _take_fx_rejection(self, order: PaymentOrder) -> str | None:
        for on, reason in self._fx_rejections:
            if on is None or order.msg_id.startswith(on) or any(p.end_to_end_id.startswith(on)
                                                                 for p in order.payments):
                self._fx_rejections.remove((on, reason))
                return reason
        return None

    def set_fx_rate(self, currency: str, rate) -> None:
        """The rate (CNY per unit of ``currency``) the next FX settlements convert at."""
        if isinstance(rate, float):
            raise TypeError("the rate must be a Decimal or a string, not a float")
        rate = Decimal(str(rate))
        if not rate.is_finite() or rate <= 0:
            raise ValueError("the rate must be positive")
        with self._lock:
            self.fx_rates[currency] = rate

    def open_treasury_account(self, number: str, owner: str = "国家金库") -> Account:
        """The treasury's CNY account: payments into it are booked with a treasury receipt (RECEIPT=)."""
        with self._lock:
            account = self.open_account(number, "CNY", owner)
            self.treasury_accounts.add(number)
            return account

    def find_order(self, msg_id: str | None = None, end_to_end_id: str | None = None) -> Order | None:
        with self._lock:
            if msg_id is not None:
                return self.orders.get(msg_id)
            return next((o for o in self.orders.values()
                         if any(p.end_to_end_id == end_to_end_id for p in o.order.payments)), None)

    def poll_outbox(self) -> list[str]:
        """Collect pain.001 files from ``<drop_dir>/outbox``: accepted ones go to processed/, refused ones to
        rejected/ with a .reason.txt. Files still being written (.part) and hidden entries are left alone."""
        if not self.drop_dir:
            return []
        handled = []
        outbox = self.drop_dir / "outbox"
        for path in sorted(outbox.iterdir()):
            if path.name.startswith(".") or path.name.endswith(".part") or not path.is_file():
                continue
            raw = path.read_bytes()
            try:
                self.receive_order(raw)
                os.replace(path, self.drop_dir / "processed" / path.name)
            except OrderRefused as exc:
                os.replace(path, self.drop_dir / "rejected" / path.name)
                (self.drop_dir / "rejected" / f"{path.name}.reason.txt").write_text(f"{exc.code}: {exc}\n")
            handled.append(path.name)
        return handled

    # -- faults ----------------------------------------------------------------------------------

    def fail_next(self, kind: str, *, on: str | None = None, delay: float = 2.0, reason: str = "") -> None:
        """Make the next request (or the next whose "METHOD /path" starts with ``on``) fail: ``timeout``
        (answer only after ``delay`` seconds), ``500`` (refuse without acting) or ``lost_response`` (act,
        then drop the connection without answering). ``fx_reject`` refuses the FX approval of the next FX
        settlement booked (or the next whose MsgId or EndToEndId starts with ``on``) with ``reason``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault {kind!r} is not one of {FAULT_KINDS}")
        if kind == "fx_reject":
            with self._lock:
                self._fx_rejections.append((on, reason or "SAFE did not approve the settlement"))
            return
        with self._lock:
            self._faults.append(Fault(kind, on, delay))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.on is None or f"{method} {path}".startswith(fault.on):
                    self._faults.remove(fault)
                    return fault
        return None

    # -- server ------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------------
# camt documents, as the bank writes them


def _el(parent, tag, text=None, **attrib):
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = str(text)
    return el


def _amt(parent, tag, amount: Decimal, currency: str):
    """An ISO amount: never negative (the direction is CdtDbtInd), with the currency's minor units."""
    step = Decimal(1).scaleb(-minor_units(currency))
    return _el(parent, tag, format(abs(amount).quantize(step), "f"), Ccy=currency)


def _account_block(parent, account: Account):
    acct = _el(parent, "Acct")
    _el(_el(_el(acct, "Id"), "Othr"), "Id", account.number)
    _el(acct, "Ccy", account.currency)
    _el(_el(acct, "Ownr"), "Nm", account.owner)
    _el(_el(_el(acct, "Svcr"), "FinInstnId"), "BICFI", BANK_BIC)


def _fx_block(parent, booking: Booking):
    source_ccy, target_ccy, rate, source_amount, target_amount, contract = booking.fx
    details = _el(parent, "AmtDtls")

    def xchg(block):
        x = _el(block, "CcyXchg")
        _el(x, "SrcCcy", source_ccy)
        _el(x, "TrgtCcy", target_ccy)
        _el(x, "UnitCcy", source_ccy)
        _el(x, "XchgRate", format(rate, "f"))
        _el(x, "CtrctId", contract)

    instructed = _el(details, "InstdAmt")
    _amt(instructed, "Amt", source_amount, source_ccy)
    if booking.currency == source_ccy:  # the debit leg: the CNY counter-value carries the rate
        counter = _el(details, "CntrValAmt")
        _amt(counter, "Amt", target_amount, target_ccy)
        xchg(counter)
    else:  # the credit leg: the instructed foreign amount carries the rate
        xchg(instructed)
        _amt(_el(details, "TxAmt"), "Amt", target_amount, target_ccy)


def _entry(parent, booking: Booking):
    ntry = _el(parent, "Ntry")
    _el(ntry, "NtryRef", booking.seq)
    _amt(ntry, "Amt", booking.amount, booking.currency)
    _el(ntry, "CdtDbtInd", "CRDT" if booking.credit else "DBIT")
    _el(_el(ntry, "Sts"), "Cd", "BOOK")
    _el(_el(ntry, "BookgDt"), "Dt", booking.booking_date.isoformat())
    _el(_el(ntry, "ValDt"), "Dt", booking.value_date.isoformat())
    _el(ntry, "AcctSvcrRef", booking.bank_ref)
    domain, family, sub = booking.family
    dom = _el(_el(ntry, "BkTxCd"), "Domn")
    _el(dom, "Cd", domain)
    fam = _el(dom, "Fmly")
    _el(fam, "Cd", family)
    _el(fam, "SubFmlyCd", sub)
    tx = _el(_el(ntry, "NtryDtls"), "TxDtls")
    refs = _el(tx, "Refs")
    _el(refs, "AcctSvcrRef", booking.bank_ref)
    _el(refs, "EndToEndId", booking.end_to_end_id or "NOTPROVIDED")
    _amt(tx, "Amt", booking.amount, booking.currency)
    _el(tx, "CdtDbtInd", "CRDT" if booking.credit else "DBIT")
    if booking.fx:
        _fx_block(tx, booking)
    if booking.counterparty:
        role = "Dbtr" if booking.credit else "Cdtr"
        _el(_el(_el(_el(tx, "RltdPties"), role), "Pty"), "Nm", booking.counterparty)
    if booking.remittance:
        _el(_el(tx, "RmtInf"), "Ustrd", booking.remittance)
    if booking.additional_info:
        _el(ntry, "AddtlNtryInf", booking.additional_info)


def _document(ns: str, message: str, msg_id: str) -> tuple[ET.Element, ET.Element]:
    # Unqualified tags under a literal xmlns: ElementTree's default_namespace option refuses the
    # unqualified Ccy attributes ISO uses, and register_namespace would change global state.
    doc = ET.Element("Document", xmlns=ns)
    body = _el(doc, message)
    hdr = _el(body, "GrpHdr")
    _el(hdr, "MsgId", msg_id)
    _el(hdr, "CreDtTm", datetime.now(UTC).isoformat(timespec="seconds"))
    return doc, body


def _serialise(doc: ET.Element, ns: str) -> bytes:
    ET.indent(doc)
    return ET.tostring(doc, encoding="UTF-8", xml_declaration=True)


def _camt054(bank: BankEmulator, account: Account, booking: Booking) -> bytes:
    doc, body = _document(NS_CAMT054, "BkToCstmrDbtCdtNtfctn", f"N{bank.run}{booking.seq:06d}")
    ntfctn = _el(body, "Ntfctn")
    _el(ntfctn, "Id", f"NTF-{booking.bank_ref}")
    _el(ntfctn, "CreDtTm", datetime.now(UTC).isoformat(timespec="seconds"))
    _account_block(ntfctn, account)
    _entry(ntfctn, booking)
    return _serialise(doc, NS_CAMT054)


def _balance(parent, code: str, amount: Decimal, currency: str, day: date):
    bal = _el(parent, "Bal")
    _el(_el(_el(bal, "Tp"), "CdOrPrtry"), "Cd", code)
    _amt(bal, "Amt", amount, currency)
    _el(bal, "CdtDbtInd", "CRDT" if amount >= 0 else "DBIT")
    _el(_el(bal, "Dt"), "Dt", day.isoformat())


def _camt053(bank: BankEmulator, account: Account, day: date) -> bytes:
    doc, body = _document(NS_CAMT053, "BkToCstmrStmt", f"S{bank.run}{len(bank.documents) + 1:06d}")
    stmt = _el(body, "Stmt")
    _el(stmt, "Id", f"STMT-{account.number}-{day:%Y%m%d}")
    _el(stmt, "CreDtTm", datetime.now(UTC).isoformat(timespec="seconds"))
    period = _el(stmt, "FrToDt")
    _el(period, "FrDtTm", f"{day.isoformat()}T00:00:00+08:00")
    _el(period, "ToDtTm", f"{day.isoformat()}T23:59:59+08:00")
    _account_block(stmt, account)
    opening = account.balance(before=day)
    todays = [b for b in account.bookings if b.booking_date == day]
    closing = opening + sum((b.amount if b.credit else -b.amount for b in todays), Decimal(0))
    _balance(stmt, "OPBD", opening, account.currency, day)
    _balance(stmt, "CLBD", closing, account.currency, day)
    for booking in todays:
        _entry(stmt, booking)
    return _serialise(doc, NS_CAMT053)


# ---------------------------------------------------------------------------------------------------
# HTTP


def _decimal_field(body: dict, name: str):
    value = body.get(name)
    if isinstance(value, float):
        raise ValueError(f"{name} must be a string")
    return value


_CONTROL = {
    # The demo drives the bank through these; amounts are strings (or JSON numbers, read as Decimal).
    "credit": lambda b, j: b.credit(j["account"], _decimal_field(j, "amount"), j["currency"], j.get("bank_ref"),
                                    j.get("end_to_end_id"), j.get("remittance"), debtor=j.get("debtor")).bank_ref,
    "convert": lambda b, j: [x.bank_ref for x in b.convert(
        j["account"], j["source_ccy"], _decimal_field(j, "amount"), _decimal_field(j, "rate"),
        j["target_account"], end_to_end_id=j.get("end_to_end_id"), remittance=j.get("remittance"))],
    "fail_next": lambda b, j: b.fail_next(j["kind"], on=j.get("on"), delay=float(j.get("delay", 2.0)),
                                          reason=j.get("reason", "")),
    "set_fx_rate": lambda b, j: b.set_fx_rate(j["currency"], str(_decimal_field(j, "rate"))),
    "fx_approval_delay": lambda b, j: setattr(b, "fx_approval_delay", float(j["seconds"])),
    "open_treasury_account": lambda b, j: b.open_treasury_account(j["account"], j.get("owner", "国家金库")).number,
    "book_payments": lambda b, j: [o.order.msg_id for o in b.book_payments()],
    "issue_statements": lambda b, j: [d.id for d in b.issue_statements()],
    "set_date": lambda b, j: setattr(b, "today", date.fromisoformat(j["date"])),
    "open_account": lambda b, j: b.open_account(j["account"], j["currency"], j.get("owner", "")).number,
}


class _Handler(BaseHTTPRequestHandler):
    server_version = "BankEmulator/1"
    protocol_version = "HTTP/1.1"
    bank: BankEmulator  # set on the subclass made per server
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write(f"bank-emulator: {fmt % args}\n")

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass  # the connection was dropped on purpose (lost_response) or by the client

    def _send(self, status: int, body: bytes, content_type: str = "application/json"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout fault); nothing to tell it

    def _json(self, status: int, value):
        self._send(status, json.dumps(value, default=str).encode())

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"error": "request too large", "code": "TOO_LARGE"})
            return None
        return self.rfile.read(length) if length else b""

    def _authorised(self) -> bool:
        if self.bank.token is None or self.headers.get("Authorization") == f"Bearer {self.bank.token}":
            return True
        self._json(401, {"error": "missing or wrong bearer token", "code": "AUTH"})
        return False

    def do_GET(self):
        self._handle("GET", b"")

    def do_POST(self):
        body = self._body()
        if body is not None:
            self._handle("POST", body)

    def _handle(self, method: str, body: bytes):
        url = urlsplit(self.path)
        path = url.path
        self.bank.requests.append((method, path))
        if not self._authorised():
            return
        if path.startswith("/_control/") and method == "POST":
            return self._control(path.removeprefix("/_control/"), body)
        fault = self.bank._take_fault(method, path)
        if fault and fault.kind == "500":
            return self._json(500, {"error": "injected failure", "code": "FAULT"})
        if fault and fault.kind == "timeout":
            self.bank.stopping.wait(fault.delay)
        status, payload, content_type = self._route(method, path, parse_qs(url.query), body)
        if fault and fault.kind == "lost_response":
            # Done, but the answer never arrives.
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self._send(status, payload, content_type)

    def _route(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, bytes, str]:
        bank = self.bank

        def js(status, value):
            return status, json.dumps(value, default=str).encode(), "application/json"

        if method == "GET" and path == "/statements":
            after = (query.get("after") or [""])[0]
            limit = min(int((query.get("limit") or ["100"])[0]), 1000)
            docs = bank.documents_after(after or None, limit)
            return js(200, {"items": [{"id": d.id, "kind": d.kind, "account": d.account} for d in docs],
                            "cursor": docs[-1].id if docs else (after or None)})
        if method == "GET" and path.startswith("/statements/"):
            doc = bank.document(unquote(path.removeprefix("/statements/")))
            if doc is None:
                return js(404, {"error": "no such document", "code": "NOT_FOUND"})
            return 200, doc.xml, "application/xml"
        if method == "POST" and path == "/payments":
            try:
                order, created = bank.receive_order(body, self.headers.get("Idempotency-Key"))
            except OrderRefused as exc:
                return js(exc.status, {"error": str(exc), "code": exc.code})
            return js(201 if created else 200, order.as_json())
        if method == "GET" and path == "/payments":
            order = bank.find_order(end_to_end_id=(query.get("end_to_end_id") or [""])[0])
            return js(200, order.as_json()) if order else js(404, {"error": "no such payment", "code": "NOT_FOUND"})
        if method == "GET" and path.startswith("/payments/"):
            order = bank.find_order(msg_id=unquote(path.removeprefix("/payments/")))
            return js(200, order.as_json()) if order else js(404, {"error": "no such order", "code": "NOT_FOUND"})
        return js(404, {"error": f"no route {method} {path}", "code": "NO_ROUTE"})

    def _control(self, action: str, body: bytes):
        handler = _CONTROL.get(action)
        if handler is None:
            return self._json(404, {"error": f"no control action {action}"})
        try:
            result = handler(self.bank, json.loads(body or b"{}", parse_float=Decimal))
        except (KeyError, ValueError, TypeError, PermanentError) as exc:
            return self._json(400, {"error": str(exc)})
        self._json(200, {"ok": True, "result": result})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Injected faults and impatient clients break connections; that is the point, not news.
        if getattr(self.RequestHandlerClass, "verbose", False):
            super().handle_error(request, client_address)


def start_bank_emulator(port: int = 0, *, drop_dir: str | os.PathLike | None = None, token: str | None = None,
                        today: date | None = None, verbose: bool = False) -> tuple[str, BankEmulator]:
    """Serve a fresh emulated bank on 127.0.0.1 in a background thread; returns (base_url, controller).
    ``controller.stop()`` shuts it down."""
    bank = BankEmulator(drop_dir=drop_dir, token=token, today=today)
    handler = type("BankHandler", (_Handler,), {"bank": bank, "verbose": verbose})
    server = _Server(("127.0.0.1", port), handler)
    bank._server = server
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="bank-emulator",
                     daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", bank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.bank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8702)
    parser.add_argument("--drop-dir", help="write camt files to DIR/inbox, collect pain.001 from DIR/outbox")
    parser.add_argument("--token", default=os.environ.get("BANK_EMULATOR_TOKEN"),
                        help="bearer token required on every request (default: none)")
    parser.add_argument("--no-auto-book", action="store_true", help="leave accepted orders unbooked")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between outbox polls and bookings")
    args = parser.parse_args(argv)
    base_url, bank = start_bank_emulator(args.port, drop_dir=args.drop_dir, token=args.token, verbose=True)
    print(f"bank emulator on {base_url}" + (f", drop folder {args.drop_dir}" if args.drop_dir else ""), flush=True)
    signal.signal(signal.SIGTERM, lambda *a: bank.stopping.set())
    try:
        while not bank.stopping.wait(args.interval):
            bank.poll_outbox()
            if not args.no_auto_book:
                bank.book_payments()
    except KeyboardInterrupt:
        pass
    finally:
        bank.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
