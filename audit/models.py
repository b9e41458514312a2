"""The tamper-evident record: one hash-chained link per business event and per history row.

See audit/chain.py for the canonical form, the hash and the verification.
"""

from django.db import models

GENESIS = "0" * 64  # the previous hash of link 1


class AppendOnlyLinks(models.QuerySet):
    def delete(self):
        raise PermissionError("Record chain links are append-only.")

    def update(self, **kwargs):
        raise PermissionError("Record chain links are append-only.")


class ChainLink(models.Model):
    """Link `seq` covers one row (model label + primary key) with the SHA-256 of its canonical content.

    hash = sha256(prev_hash | seq | label | object_pk | row_digest). The database refuses UPDATE and
    DELETE on this table (migration 0002), so the rule also holds for raw SQL and the admin.
    """

    seq = models.PositiveBigIntegerField(unique=True)  # gap-free from 1; unique is the last defence
    label = models.CharField(max_length=100)  # model._meta.label_lower, e.g. "cases.historicalentrustment"
    object_pk = models.CharField(max_length=64)
    row_digest = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AppendOnlyLinks.as_manager()

    class Meta:
        ordering = ["seq"]
        # One link per row: a row chained twice is a bug, and with this equal counts prove full cover.
        constraints = [models.UniqueConstraint(fields=["label", "object_pk"], name="one_link_per_row")]

    def __str__(self):
        return f"#{self.seq} {self.label}:{self.object_pk}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Record chain links are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Record chain links are append-only.")


class ChainHead(models.Model):
    """The one row every appender locks: the last link's number and hash.

    Locking one row (select_for_update) makes appends take turns on PostgreSQL, so the sequence stays
    gap-free and each link sees its true predecessor. It is a pointer, not the truth: verify checks it
    against the last link, so cutting links off the end is noticed.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS)

    def __str__(self):
        return f"#{self.seq} {self.hash}"
