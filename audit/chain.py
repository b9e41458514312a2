"""Hash chain over the business record: every `cases.Event` and every simple-history row.

Canonical content of a row (what `row_digest` hashes)
    The row as stored, read back from the database: a JSON object mapping the `attname` of every
    concrete field (foreign keys therefore as their ids, e.g. "actor_id") to its value, serialised with
    sorted keys, separators "," and ":", no ASCII escaping, UTF-8. Values: null, booleans, integers and
    strings as themselves; Decimal as its string as stored ("2.50000000"); datetimes in UTC ISO 8601
    ("2025-06-01T09:00:00.123456+00:00"), dates and times ISO 8601; UUIDs as strings; bytes as hex;
    durations as ISO 8601 durations; JSON fields as their JSON value (keys sorted like the rest).
    row_digest = hex SHA-256 of those bytes.

Link hash
    hash = hex SHA-256 of UTF-8 "prev_hash|seq|label|object_pk|row_digest" (seq in decimal, label the
    model's label_lower). Unambiguous: the two hashes are fixed-width hex, seq is digits, a label has
    no "|". Link 1's prev_hash is 64 zeros.

The row is read back rather than hashed from the Python object, so what is hashed is exactly what a
later check reads: no surprises from Decimal scale, datetime precision or JSON key order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from uuid import UUID

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, models, transaction
from django.utils import timezone
from django.utils.duration import duration_iso_string
from simple_history.models import HistoricalChanges

from .models import GENESIS, ChainHead, ChainLink

EVENT_LABEL = "cases.event"


# --------------------------------------------------------------------------- what is chained


def is_chained(model) -> bool:
    return model._meta.label_lower == EVENT_LABEL or issubclass(model, HistoricalChanges)


def chained_models() -> list[type[models.Model]]:
    """Every model whose rows the chain covers, in label order (deterministic)."""
    return sorted((m for m in apps.get_models() if is_chained(m)), key=lambda m: m._meta.label_lower)


# --------------------------------------------------------------------------- canonical form


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if timezone.is_aware(value):
            value = value.astimezone(dt_timezone.utc)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return duration_iso_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _attnames(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def canonical(model, values: tuple) -> bytes:
    """The canonical bytes of one row, from its values in `_attnames(model)` order."""
    row = {name: _plain(v) for name, v in zip(_attnames(model), values)}
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest(model, values: tuple) -> str:
    return hashlib.sha256(canonical(model, values)).hexdigest()


def link_hash(prev_hash: str, seq: int, label: str, object_pk: str, row_digest: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{seq}|{label}|{object_pk}|{row_digest}".encode()).hexdigest()


def _stored_rows(model, pks, using) -> dict[str, tuple]:
    """{str(pk): values} for the rows that exist, read as a later check will read them."""
    names = _attnames(model)
    pk_index = names.index(model._meta.pk.attname)
    rows = model._base_manager.using(using).filter(pk__in=list(pks)).values_list(*names)
    return {str(values[pk_index]): values for values in rows}


# --------------------------------------------------------------------------- appending


def _lock_head(using) -> ChainHead:
    head, _ = ChainHead.objects.using(using).select_for_update().get_or_create(pk=1)
    return head


def append(instance, *, using: str | None = None) -> ChainLink:
    """Chain one row that was just written, in the caller's transaction.

    The head row lock makes concurrent appenders on PostgreSQL take turns until they commit; on SQLite
    the writer already holds the database write lock (it just inserted the row). The lock is taken
    after the row is written and held to the end of the writing transaction. So the rule for writers:
    once a transaction has written a chained row, it must not wait for a row lock that another writer
    may hold while waiting for the head (lock shared rows such as assets never; `of=("self",)`).

    Outside transaction.atomic() the row has already committed alone: a crash before this link lands
    leaves a row that verify() reports as not chained. Services all run inside atomic().
    """
    using = using or DEFAULT_DB_ALIAS
    model = type(instance)
    label = model._meta.label_lower
    object_pk = str(instance.pk)
    values = _stored_rows(model, [instance.pk], using)[object_pk]
    row_digest = digest(model, values)
    # savepoint=False: a failure here must undo the caller's row too, never leave it unchained.
    with transaction.atomic(using=using, savepoint=False):
        head = _lock_head(using)
        seq = head.seq + 1
        link = ChainLink.objects.using(using).create(
            seq=seq, label=label, object_pk=object_pk, row_digest=row_digest, prev_hash=head.hash,
            hash=link_hash(head.hash, seq, label, object_pk, row_digest))
        head.seq, head.hash = seq, link.hash
        head.save(using=using, update_fields=["seq", "hash"])
    return link


def adopt_existing(*, using: str = DEFAULT_DB_ALIAS, batch: int = 2000) -> int:
    """Chain the rows of a database that predates the chain. Returns how many were chained.

    Only when the chain is still empty: once it has started, a row without a link is evidence (a row
    written around the application) and must be reported by verify(), not adopted. Order: models by
    label, rows by primary key, so the same database always gives the same chain.
    """
    with transaction.atomic(using=using):
        head = _lock_head(using)
        if head.seq or ChainLink.objects.using(using).exists():
            return 0
        seq, prev = 0, GENESIS
        for model in chained_models():
            label = model._meta.label_lower
            names = _attnames(model)
            pk_index = names.index(model._meta.pk.attname)
            pending = []
            rows = model._base_manager.using(using).order_by("pk").values_list(*names)
            for values in rows.iterator(chunk_size=batch):
                seq += 1
                object_pk, row_digest = str(values[pk_index]), digest(model, values)
                link = ChainLink(seq=seq, label=label, object_pk=object_pk, row_digest=row_digest, prev_hash=prev,
                                 hash=link_hash(prev, seq, label, object_pk, row_digest))
                pending.append(link)
                prev = link.hash
                if len(pending) >= batch:
                    ChainLink.objects.using(using).bulk_create(pending)
                    pending = []
            ChainLink.objects.using(using).bulk_create(pending)
        head.seq, head.hash = seq, prev
        head.save(using=using, update_fields=["seq", "hash"])
    return seq


# --------------------------------------------------------------------------- reading


def head(*, using: str = DEFAULT_DB_ALIAS) -> tuple[int, str]:
    """(seq, hash) of the last link; (0, 64 zeros) before the first."""
    row = ChainHead.objects.using(using).filter(pk=1).values_list("seq", "hash").first()
    return row or (0, GENESIS)


ROW_CHANGED = "row changed"
ROW_MISSING = "row missing"
LINK_ALTERED = "link altered"
GAP = "gap"
HEAD_MISMATCH = "head mismatch"
NOT_CHAINED = "row not chained"
EXPECTED_HEAD_MISSING = "printed head not in chain"


@dataclass(frozen=True)
class Break:
    seq: int | None
    label: str
    object_pk: str
    what: str
    detail: str = ""

    def __str__(self):
        where = f"seq {self.seq}" if self.seq is not None else "outside the chain"
        return f"{where}: {self.label} pk={self.object_pk}: {self.what}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Result:
    count: int  # links walked
    head_seq: int
    head_hash: str
    first_break: Break | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def _model(label: str):
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        return None


def verify(*, using: str = DEFAULT_DB_ALIAS, chunk: int = 2000,
           expect: tuple[int, str] | None = None) -> Result:
    """Walk the chain from link 1, recomputing every row digest from the current row and every hash.

    Stops at the first break. Streams `chunk` links at a time (keyset pages on seq), fetching each
    chunk's rows with one query per model. `expect` = a (seq, hash) printed earlier, e.g. on a final
    report: the chain must still hold that link with that hash.
    """
    count, prev_hash, last_seq = 0, GENESIS, 0
    found_expected = expect is None

    def result(brk=None):
        return Result(count=count, head_seq=last_seq, head_hash=prev_hash, first_break=brk)

    def walk() -> Break | None:
        """Check every link after last_seq that is there now; advance the state past the good ones."""
        nonlocal count, prev_hash, last_seq, found_expected
        while links := list(ChainLink.objects.using(using).filter(seq__gt=last_seq).order_by("seq")[:chunk]):
            by_label: dict[str, list[str]] = {}
            for link in links:
                by_label.setdefault(link.label, []).append(link.object_pk)
            current: dict[str, dict[str, tuple]] = {}
            for label, pks in by_label.items():
                if model := _model(label):
                    current[label] = _stored_rows(model, [model._meta.pk.to_python(pk) for pk in pks], using)
            for link in links:
                where = (link.seq, link.label, link.object_pk)
                if link.seq != last_seq + 1:
                    return Break(*where, GAP, f"link {last_seq + 1} is missing")
                if link.prev_hash != prev_hash:
                    return Break(*where, LINK_ALTERED, f"its previous hash is not link {last_seq}'s hash")
                if link.hash != link_hash(link.prev_hash, link.seq, link.label, link.object_pk, link.row_digest):
                    return Break(*where, LINK_ALTERED, "its hash does not match its content")
                values = current.get(link.label, {}).get(link.object_pk)
                if values is None:
                    return Break(*where, ROW_MISSING)
                if digest(_model(link.label), values) != link.row_digest:
                    return Break(*where, ROW_CHANGED)
                if expect and link.seq == expect[0]:
                    if link.hash != expect[1]:
                        return Break(*where, EXPECTED_HEAD_MISSING, f"printed hash {expect[1]}")
                    found_expected = True
                count, prev_hash, last_seq = count + 1, link.hash, link.seq
        return None

    if brk := walk():
        return result(brk)
    # The head and its link commit together, so every link up to the head read now is visible. While
    # writers append during the walk the head runs ahead: walk on. A head still ahead when no link is
    # left means links were cut off the end; a head behind the last link means it was moved back.
    stored_seq, stored_hash = head(using=using)
    while stored_seq > last_seq:
        walked = last_seq
        if brk := walk():
            return result(brk)
        if last_seq == walked:
            break
        stored_seq, stored_hash = head(using=using)
    if (stored_seq, stored_hash) != (last_seq, prev_hash):
        return result(Break(stored_seq, "audit.chainhead", "1", HEAD_MISMATCH,
                            f"the head says #{stored_seq} {stored_hash}, the last link is #{last_seq}"))
    if not found_expected:
        return result(Break(expect[0], "", "", EXPECTED_HEAD_MISSING, f"printed hash {expect[1]}"))
    return result(first_unchained(using=using, chunk=chunk))


def first_unchained(*, using: str = DEFAULT_DB_ALIAS, chunk: int = 2000) -> Break | None:
    """A row of a chained model that has no link: written around the application (raw SQL, bulk_create)."""
    for model in chained_models():
        label = model._meta.label_lower
        rows = model._base_manager.using(using)
        if rows.count() == ChainLink.objects.using(using).filter(label=label).count():
            continue  # every link's row exists (the walk) and no row has two links (unique): equal counts, full cover
        pks = rows.order_by("pk").values_list("pk", flat=True)
        last = None
        while True:
            page = list((pks.filter(pk__gt=last) if last is not None else pks)[:chunk])
            if not page:
                break
            linked = set(ChainLink.objects.using(using).filter(label=label, object_pk__in=[str(p) for p in page])
                         .values_list("object_pk", flat=True))
            for pk in page:
                if str(pk) not in linked:
                    return Break(None, label, str(pk), NOT_CHAINED)
            last = page[-1]
    return None
