"""The read side across many entrustments: my work, the list and its exports, the dashboard, notifications.

Every read starts from `visible_entrustments(user)` (or `waiting_for(user)`, which is built on
it); nothing here decides by itself who may see what. Each page runs a fixed number of queries
whatever the number of rows: related rows come through select_related and one prefetch.

The aggregations for the dashboard live here rather than in `selectors` because they serve this
page only; move them when a second caller appears.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Case as SqlCase
from django.db.models import Count, F, IntegerField, Prefetch, Q, Sum, Value, When, Window
from django.db.models.functions import TruncMonth
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from agencies.models import Organisation, OrgKind
from settlements.models import TreasuryRemittance, VictimReturn

from . import exports
from .charts import Bar, Chart
from .models import TERMINAL, Asset, DisposalPolicy, EntrustmentState, Fill, Holding, Notification
from .next_steps import waiting_for
from .selectors import visible_entrustments

PER_PAGE = 50
QUEUE_LIMIT = 100  # rows of "waiting for me" on the landing page; the list shows the rest
RECENT_LIMIT = 10
LATEST_NOTIFICATIONS = 5
DASHBOARD_MONTHS = 12
STATE_ORDER = {state: rank for rank, state in enumerate(EntrustmentState.values)}


# --------------------------------------------------------------------------- the 24-hour clock


@dataclass(frozen=True)
class SlaClock:
    """Where an entrustment stands against its detection-to-credit deadline."""

    NONE, RUNNING, WARNING, BREACHED, STOPPED = "none", "running", "warning", "breached", "stopped"

    status: str
    deadline: datetime | None = None
    remaining: timedelta | None = None  # negative once breached
    stopped_at: datetime | None = None

    @property
    def label(self) -> str:
        return {
            self.NONE: "",
            self.RUNNING: _("On time"),
            self.WARNING: _("Nearing deadline"),
            self.BREACHED: _("Breached"),
            self.STOPPED: _("Clock stopped"),
        }[self.status]

    @property
    def met(self) -> bool:
        return self.status == self.STOPPED and self.stopped_at <= self.deadline

    @property
    def remaining_text(self) -> str:
        if self.status in (self.RUNNING, self.WARNING):
            return _("%(duration)s left") % {"duration": format_duration(self.remaining)}
        if self.status == self.BREACHED:
            return _("%(duration)s past the deadline") % {"duration": format_duration(-self.remaining)}
        return ""


def format_duration(value: timedelta) -> str:
    minutes = max(int(value.total_seconds() // 60), 0)
    hours, minutes = divmod(minutes, 60)
    return _("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}


def sla_clock(entrustment, now: datetime) -> SlaClock:
    """Needs `policy` loaded with the entrustment (select_related) to cost no query."""
    if not entrustment.sla_started_at:
        return SlaClock(SlaClock.NONE)
    policy = entrustment.policy
    deadline = entrustment.sla_started_at + timedelta(hours=policy.sla_hours)
    if entrustment.sla_stopped_at:
        return SlaClock(SlaClock.STOPPED, deadline, deadline - entrustment.sla_stopped_at, entrustment.sla_stopped_at)
    remaining = deadline - now
    if remaining <= timedelta(0):
        return SlaClock(SlaClock.BREACHED, deadline, remaining)
    if remaining < timedelta(hours=policy.sla_warn_hours):
        return SlaClock(SlaClock.WARNING, deadline, remaining)
    return SlaClock(SlaClock.RUNNING, deadline, remaining)


@dataclass(frozen=True)
class ClockConditions:
    """`sla_clock` in SQL: running clocks within the warning window (or past it), and those past the deadline.

    The hours are per policy; policies are few, so one condition per policy keeps the date
    arithmetic in Python and the query the same on PostgreSQL and SQLite.
    """

    overdue: Q
    breached: Q

    @classmethod
    def at(cls, now: datetime) -> ClockConditions:
        overdue, breached = Q(pk__in=[]), Q(pk__in=[])
        for pk, hours, warn_hours in DisposalPolicy.objects.values_list("pk", "sla_hours", "sla_warn_hours"):
            overdue |= Q(policy_id=pk, sla_started_at__lt=now - timedelta(hours=hours - warn_hours))
            breached |= Q(policy_id=pk, sla_started_at__lte=now - timedelta(hours=hours))
        running = Q(sla_started_at__isnull=False, sla_stopped_at__isnull=True)
        return cls(overdue=running & overdue, breached=running & breached)


def state_counts(queryset) -> list[tuple[str, str, int]]:
    """(state, label, count) in lifecycle order, for the states that occur."""
    counts = dict(queryset.order_by().values_list("state").annotate(n=Count("pk")))
    return [(s, EntrustmentState(s).label, counts[s]) for s in sorted(counts, key=STATE_ORDER.get)]


def with_list_relations(queryset):
    """Everything a list row shows, in a fixed number of queries: one join and one prefetch."""
    return queryset.select_related("case", "bureau", "agency", "policy").prefetch_related(
        Prefetch("holdings", queryset=Holding.objects.select_related("asset"))
    )


# --------------------------------------------------------------------------- the list's filters


SORT_CHOICES = [
    ("-changed", gettext_lazy("Last state change, newest first")),
    ("changed", gettext_lazy("Last state change, oldest first")),
    ("-created", gettext_lazy("Created, newest first")),
    ("created", gettext_lazy("Created, oldest first")),
    ("number", gettext_lazy("Number, ascending")),
    ("-number", gettext_lazy("Number, descending")),
    ("state", gettext_lazy("State, in lifecycle order")),
    ("-state", gettext_lazy("State, reverse lifecycle order")),
]
DEFAULT_SORT = "-changed"
STATE_RANK = SqlCase(*[When(state=s, then=Value(i)) for s, i in STATE_ORDER.items()], output_field=IntegerField())
ORDERINGS = {"number": ["number"], "created": ["created_at", "pk"], "changed": ["state_changed_at", "pk"],
             "state": [STATE_RANK, "number"]}


def ordering(sort: str) -> list:
    """Only whitelisted keys reach order_by; anything else was already refused by the form."""
    descending, key = sort.startswith("-"), sort.lstrip("-")
    fields = ORDERINGS.get(key, ORDERINGS["changed"])
    if not descending:
        return fields
    return [f"-{f}" if isinstance(f, str) else f.desc() for f in fields]


def _date_field(label):
    return forms.DateField(label=label, required=False, input_formats=["%Y-%m-%d"],
                           widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))


class EntrustmentFilterForm(forms.Form):
    q = forms.CharField(label=gettext_lazy("Case or entrustment number"), required=False, max_length=100,
                        widget=forms.TextInput(attrs={"type": "search", "autocomplete": "off"}))
    state = forms.MultipleChoiceField(label=gettext_lazy("State"), choices=EntrustmentState.choices, required=False,
                                      widget=forms.CheckboxSelectMultiple)
    bureau = forms.ModelChoiceField(label=gettext_lazy("Bureau"), queryset=Organisation.objects.none(),
                                    required=False, empty_label=gettext_lazy("All bureaus"))
    asset = forms.ModelChoiceField(label=gettext_lazy("Asset"), queryset=Asset.objects.all(), required=False,
                                   empty_label=gettext_lazy("All assets"))
    created_from = _date_field(gettext_lazy("Created from"))
    created_to = _date_field(gettext_lazy("Created until"))
    overdue = forms.BooleanField(label=gettext_lazy("Only SLA breached or nearing the deadline"), required=False)
    waiting = forms.BooleanField(label=gettext_lazy("Only what waits for me"), required=False)
    sort = forms.ChoiceField(label=gettext_lazy("Sort by"), choices=SORT_CHOICES, required=False)

    def __init__(self, data, *, visible):
        super().__init__(data)
        # Only bureaus whose entrustments this person can see: the choice list leaks nothing.
        self.fields["bureau"].queryset = Organisation.objects.filter(
            kind=OrgKind.BUREAU, pk__in=visible.order_by().values("bureau_id")
        ).order_by("name")

    def clean(self):
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", _("The end date is before the start date."))
        return data

    def problems(self) -> list[str]:
        """The refused filters, named, for a message above the results (they are ignored, not fatal)."""
        return [f"{self.fields[name].label}: {' '.join(errors)}" if name in self.fields else " ".join(errors)
                for name, errors in self.errors.items()]


def filter_entrustments(user, params, *, now: datetime | None = None):
    """The list's filters applied to what `user` may see; invalid values are left out and reported by the form."""
    visible = visible_entrustments(user)
    form = EntrustmentFilterForm(params, visible=visible)
    form.is_valid()  # invalid fields are missing from cleaned_data, so their filter is ignored
    f = form.cleaned_data
    qs = visible
    if f.get("q"):
        qs = qs.filter(Q(number__icontains=f["q"]) | Q(case__case_number__icontains=f["q"]))
    if f.get("state"):
        qs = qs.filter(state__in=f["state"])
    if f.get("bureau"):
        qs = qs.filter(bureau=f["bureau"])
    if f.get("asset"):
        # A subquery rather than a join, so an entrustment with several holdings of the asset is listed once.
        qs = qs.filter(pk__in=Holding.objects.filter(asset=f["asset"]).values("entrustment_id"))
    if f.get("created_from"):
        qs = qs.filter(created_at__date__gte=f["created_from"])  # dates in settings.TIME_ZONE
    if f.get("created_to"):
        qs = qs.filter(created_at__date__lte=f["created_to"])
    if f.get("overdue"):
        qs = qs.filter(ClockConditions.at(now or timezone.now()).overdue)
    if f.get("waiting"):
        qs = qs.filter(pk__in=waiting_for(user).values("pk"))
    return form, qs.order_by(*ordering(f.get("sort") or DEFAULT_SORT))


COLUMNS = [  # (sort key or None, heading)
    ("number", gettext_lazy("Number")),
    (None, gettext_lazy("Case")),
    (None, gettext_lazy("Bureau")),
    (None, gettext_lazy("Agency")),
    ("state", gettext_lazy("State")),
    ("created", gettext_lazy("Created")),
    ("changed", gettext_lazy("State changed")),
    (None, gettext_lazy("24-hour clock")),
    (None, gettext_lazy("Holdings")),
]


def _columns(sort: str) -> list[dict]:
    columns = []
    for key, label in COLUMNS:
        column = {"key": key, "label": label, "aria_sort": None, "next": key}
        if key and sort.lstrip("-") == key:
            column["aria_sort"] = "descending" if sort.startswith("-") else "ascending"
            column["next"] = key if sort.startswith("-") else f"-{key}"
        columns.append(column)
    return columns


def _is_partial(request) -> bool:
    # A history restore after a cache miss wants the whole page back.
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


@login_required
def entrustment_list(request):
    now = timezone.now()
    form, qs = filter_entrustments(request.user, request.GET, now=now)
    page = Paginator(with_list_relations(qs), PER_PAGE).get_page(request.GET.get("page"))
    for e in page:
        e.sla = sla_clock(e, now)
        e.holdings_summary = [(asset.format_amount(amount), asset.symbol)
                              for asset, amount in exports.holdings_by_asset(e)]
    sort = form.cleaned_data.get("sort") or DEFAULT_SORT
    partial = _is_partial(request)
    if partial:
        # A sort chosen by a column heading also shows in the form's own sort field (swapped out of band).
        form.fields["sort"].widget.attrs["hx-swap-oob"] = "true"
    context = {"form": form, "page": page, "problems": form.problems(), "columns": _columns(sort),
               "export_limit": exports.max_rows(), "partial": partial}
    template = "cases/partials/list_rows.html" if partial else "cases/entrustment_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def entrustment_export(request, fmt):
    if fmt not in ("csv", "xlsx"):
        raise Http404
    form, qs = filter_entrustments(request.user, request.GET)
    total, limit = qs.count(), exports.max_rows()
    if total > limit:
        messages.error(request, _("An export holds at most %(limit)s rows and this list has %(total)s. "
                                  "Narrow the filters and export again.")
                       % {"limit": f"{limit:,}", "total": f"{total:,}"})
        return redirect(f"{reverse('entrustment-list')}?{request.GET.urlencode()}")
    filename = f"entrustments-{timezone.localtime():%Y%m%d-%H%M}.{fmt}"
    queryset = with_list_relations(qs)
    return exports.csv_response(queryset, filename) if fmt == "csv" else exports.xlsx_response(queryset, filename)


# --------------------------------------------------------------------------- landing page


def _my_notifications(user, visible):
    # A notification about an entrustment the person can no longer see is not shown either.
    return Notification.objects.filter(user=user).filter(
        Q(event__entrustment__isnull=True) | Q(event__entrustment__in=visible.order_by().values("pk"))
    )


def _summary(visible, now: datetime) -> dict:
    """For people who read and never act (supervisors, auditors): the whole picture in one query."""
    clock = ClockConditions.at(now)
    return visible.order_by().aggregate(
        total=Count("pk"),
        open=Count("pk", filter=~Q(state__in=TERMINAL)),
        running=Count("pk", filter=Q(sla_started_at__isnull=False, sla_stopped_at__isnull=True)),
        overdue=Count("pk", filter=clock.overdue),
        breached=Count("pk", filter=clock.breached),
    )


@login_required
def home(request):
    user, now = request.user, timezone.now()
    memberships = list(user.memberships.filter(is_active=True, organisation__is_active=True)
                       .select_related("organisation"))
    read_only = bool(memberships) and all(m.is_read_only for m in memberships)
    visible = visible_entrustments(user)
    context = {"memberships": memberships, "read_only": read_only, "now": now}
    if read_only:
        context["summary"] = _summary(visible, now)
        context["summary_states"] = state_counts(visible)
    else:
        queue = waiting_for(user)
        counts = state_counts(queue)
        # Running clocks first, nearest deadline first; then what has waited longest.
        rows = list(queue.select_related("case", "bureau", "policy").annotate(
            clock_running=SqlCase(When(sla_started_at__isnull=False, sla_stopped_at__isnull=True, then=Value(0)),
                                  default=Value(1), output_field=IntegerField())
        ).order_by("clock_running", "sla_started_at", "state_changed_at", "pk")[:QUEUE_LIMIT])
        for e in rows:
            e.sla = sla_clock(e, now)
            e.waiting_since = format_duration(now - e.state_changed_at)
        context.update(queue=rows, queue_counts=counts, queue_total=sum(n for _s, _l, n in counts))
    # The unread total rides on the latest rows as a window over all of them: one query for both.
    latest = list(_my_notifications(user, visible).select_related("event__entrustment").annotate(
        unread_total=Window(Count("pk", filter=Q(read_at__isnull=True)))
    ).order_by("-created_at", "-pk")[:LATEST_NOTIFICATIONS])
    for n in latest:
        n.states = _transition_labels(n.event)
    recent = list(visible.select_related("case", "bureau", "agency")
                  .order_by("-state_changed_at", "-pk")[:RECENT_LIMIT])
    context.update(
        notifications=latest,
        unread=latest[0].unread_total if latest else 0,
        recent=recent,
        page=recent,  # the name the first landing page used for this list; callers still read it
    )
    return render(request, "cases/home.html", context)


# --------------------------------------------------------------------------- dashboard


def _month_key(value: datetime) -> tuple[int, int]:
    local = timezone.localtime(value)
    return local.year, local.month


def _last_months(now: datetime, count: int) -> list[tuple[int, int]]:
    year, month = _month_key(now)
    months = []
    for _i in range(count):
        months.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months[::-1]


def _month_label(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]:02d}"


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _monthly_money(queryset, date_field: str, amount, group: str | None = None) -> dict:
    """{group or "CNY": {(year, month): Decimal}} with SQL sums: money is Decimal, SUM is exact."""
    fields = ["month"] + ([group] if group else [])
    rows = (queryset.order_by().annotate(month=TruncMonth(date_field)).values(*fields)
            .annotate(total=Sum(amount)))
    result: dict[str, dict] = defaultdict(lambda: defaultdict(Decimal))
    for row in rows:
        result[row[group] if group else "CNY"][_month_key(row["month"])] += row["total"]
    return result


def _money_charts(prefix: str, title: str, series: dict, months: list) -> list[tuple[Chart, str]]:
    charts = []
    for currency in sorted(series):
        per_month = series[currency]
        bars = [Bar(_month_label(m), per_month.get(m, Decimal(0)), _money(per_month.get(m, Decimal(0))))
                for m in months]
        chart = Chart(f"{prefix}-{currency.lower()}", f"{title} ({currency})", _("Month"), currency, bars)
        charts.append((chart, _money(sum(per_month.values(), Decimal(0)))))
    return charts


@login_required
def dashboard(request):
    user, now = request.user, timezone.now()
    visible = visible_entrustments(user)
    months = _last_months(now, DASHBOARD_MONTHS)
    since = timezone.make_aware(datetime(*months[0], 1))
    scoped = visible.order_by().values("pk")

    states = state_counts(visible)
    clock = ClockConditions.at(now)
    overdue = visible.order_by().aggregate(overdue=Count("pk", filter=clock.overdue),
                                           breached=Count("pk", filter=clock.breached))
    by_bureau = (visible.order_by().values("bureau__name").annotate(
        total=Count("pk"), open=Count("pk", filter=~Q(state__in=TERMINAL)), overdue=Count("pk", filter=clock.overdue)
    ).order_by("bureau__name"))

    # Coins sold: base units, so summed in Python (see cases.fields.BaseUnitsField), per asset and month.
    sold: dict[int, dict] = defaultdict(lambda: defaultdict(int))
    sold_total: dict[int, int] = defaultdict(int)
    for asset_id, quantity, executed_at in Fill.objects.filter(lot__entrustment__in=scoped).values_list(
            "lot__asset_id", "quantity", "executed_at"):
        sold_total[asset_id] += quantity
        if executed_at >= since:
            sold[asset_id][_month_key(executed_at)] += quantity
    assets = Asset.objects.in_bulk(list(sold_total))
    sold_charts = []
    for asset in sorted(assets.values(), key=lambda a: (a.symbol, a.chain)):
        per_month = sold[asset.pk]
        # An empty month reads "0", not eighteen zeros of wei.
        bars = [Bar(_month_label(m), per_month.get(m, 0),
                    asset.format_amount(per_month[m]) if per_month.get(m) else "0") for m in months]
        chart = Chart(f"sold-{asset.pk}", _("Sold per month: %(asset)s") % {"asset": asset}, _("Month"),
                      asset.symbol, bars)
        sold_charts.append((chart, asset.format_amount(sold_total[asset.pk])))

    net = _monthly_money(Fill.objects.filter(lot__entrustment__in=scoped), "executed_at", F("gross") - F("fee"),
                         group="currency")
    remitted = _monthly_money(TreasuryRemittance.objects.filter(entrustment__in=scoped, remitted_at__isnull=False),
                              "remitted_at", "amount_cny")
    returned = _monthly_money(VictimReturn.objects.filter(entrustment__in=scoped, approved_at__isnull=False),
                              "approved_at", "amount_cny")

    state_chart = Chart("states", _("Entrustments by state"), _("State"), _("Entrustments"),
                        [Bar(label, n, str(n)) for _s, label, n in states])
    context = {
        "total": sum(n for _s, _l, n in states),
        "states": states,
        "state_chart": state_chart,
        "overdue": overdue,
        "by_bureau": by_bureau,
        "sold_charts": sold_charts,
        "net_charts": _money_charts("net", _("Net sale proceeds per month"), net, months),
        "remitted_charts": _money_charts("remitted", _("Remitted to the treasury per month"), remitted, months),
        "returned_charts": _money_charts("returned", _("Returned to victims per month"), returned, months),
        "months": (_month_label(months[0]), _month_label(months[-1])),
        "memberships": user.memberships.filter(is_active=True).select_related("organisation"),
    }
    return render(request, "cases/dashboard.html", context)


# --------------------------------------------------------------------------- notifications


@login_required
def notifications(request):
    visible = visible_entrustments(request.user)
    mine = _my_notifications(request.user, visible)
    unread_only = request.GET.get("unread") == "1"
    shown = mine.filter(read_at__isnull=True) if unread_only else mine
    page = Paginator(shown.select_related("event__entrustment__case").order_by("-created_at", "-pk"),
                     PER_PAGE).get_page(request.GET.get("page"))
    for n in page:
        n.states = _transition_labels(n.event)
    context = {"page": page, "unread": mine.filter(read_at__isnull=True).count(), "unread_only": unread_only}
    return render(request, "cases/notifications.html", context)


def _transition_labels(event) -> tuple[str, str] | None:
    labels = dict(EntrustmentState.choices)
    if event.from_state in labels and event.to_state in labels:
        return labels[event.from_state], labels[event.to_state]
    return None


def notifications_mark_read(*, user, visible, notification_id: int | None = None) -> int:
    """Mark one (or, without an id, every) unread notification of `user` as read; returns how many changed.

    A compare-and-swap on read_at: marking twice changes nothing. Notification carries no history
    (it is a delivery receipt, not part of the disposal record), so update() is the right tool.
    """
    unread = _my_notifications(user, visible).filter(read_at__isnull=True)
    if notification_id is not None:
        unread = unread.filter(pk=notification_id)
    return Notification.objects.filter(pk__in=list(unread.values_list("pk", flat=True))).update(
        read_at=timezone.now())


@login_required
@require_POST
def notification_read(request, pk=None):
    visible = visible_entrustments(request.user)
    mine = _my_notifications(request.user, visible)
    if pk is not None and not mine.filter(pk=pk).exists():
        raise Http404  # someone else's, or about an entrustment no longer visible: the same answer
    notifications_mark_read(user=request.user, visible=visible, notification_id=pk)
    if _is_partial(request) and pk is not None:
        notification = mine.select_related("event__entrustment__case").get(pk=pk)
        notification.states = _transition_labels(notification.event)
        context = {"n": notification, "unread": mine.filter(read_at__isnull=True).count(), "oob": True}
        return render(request, "cases/partials/list_notification_row.html", context)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("notifications")
    return redirect(target)
