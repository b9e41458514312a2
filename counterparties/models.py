"""What the workers keep: every message exchanged with an outside party, the exceptions they raise on an
entrustment, and the jobs they claim.

The adapters (``counterparties.exchanges``, ``.banks``, ``.chains``) know nothing of the database; the
workers hand what they return to the core's services and store the evidence here.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


class CounterpartyMessage(models.Model):
    """One request and its answer (or its absence), redacted by the adapter before it reaches us.

    ``sha256`` is the adapter's digest over the exchange (see ``MessageRecord.digest``): anyone holding the
    row can recompute it. Rows are evidence and are never changed.
    """

    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="counterparty_messages")
    party = models.CharField(_("party"), max_length=40)
    operation = models.CharField(_("operation"), max_length=60)
    method = models.CharField(max_length=10)
    url = models.TextField()
    request_headers = models.JSONField(default=dict)
    request_body = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True, null=True)
    started_at = models.DateTimeField(_("sent at"))
    elapsed_ms = models.DecimalField(max_digits=12, decimal_places=3)
    error = models.TextField(blank=True, null=True)
    idempotency_key = models.CharField(max_length=120, blank=True, null=True)
    sha256 = models.CharField(max_length=64)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["entrustment", "started_at"])]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Counterparty messages are evidence and are not changed.")
        super().save(*args, **kwargs)


class ExceptionKind(models.TextChoices):
    CHAIN = "chain", _("On-chain verification")
    CUSTODY = "custody", _("Custody instruction")
    DEPOSIT = "deposit", _("Platform deposit")
    INQUIRY = "inquiry", _("Inquiry and quotes")
    EXECUTION = "execution", _("Order execution")
    BANK = "bank", _("Bank, FX and remittance")
    RECONCILIATION = "reconciliation", _("Reconciliation")
    OUTAGE = "outage", _("Counterparty unavailable")
    BOND = "bond", _("Performance bond")


class OperationalException(models.Model):
    """Something an outside party did (or failed to do) that a person must look at.

    Never a silent correction: the worker stops that line of work and records what it saw. A poll that sees
    the same problem again updates ``last_seen_at`` and ``occurrences`` instead of adding rows (``key``).
    """

    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="exceptions")
    kind = models.CharField(_("kind"), max_length=20, choices=ExceptionKind.choices)
    # What makes two sightings the same exception, e.g. "deposit:WT-2026-000001-P1:wrong-amount".
    key = models.CharField(max_length=200)
    party = models.CharField(_("party"), max_length=40, blank=True)
    code = models.CharField(_("code"), max_length=40, blank=True)
    message = models.TextField(_("what happened"))
    details = models.JSONField(default=dict)
    raised_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    occurrences = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+")
    resolution = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            # At most one open exception per key; a resolved one may recur as a new row.
            models.UniqueConstraint(fields=["key"], condition=models.Q(resolved_at__isnull=True),
                                    name="one_open_exception_per_key"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.message[:80]}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class JobState(models.TextChoices):
    PENDING = "pending", _("Pending")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed: a person must look")


class Job(models.Model):
    """A unit of outward work a task claims before doing it, so two workers never do it twice.

    ``key`` is the idempotency key of the outward action as well (client order id, transfer reference,
    payment message id): a crashed worker's successor finds the job, resumes with the same key, and the
    counterparty treats it as the same action.
    """

    key = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=40)
    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="jobs")
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.PENDING)
    # A lease, not a lock: a worker that dies simply lets it run out.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=120, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # What the outward call returned, kept so a resumed job continues from it (txid, order id, quote id...).
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
