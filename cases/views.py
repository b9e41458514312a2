"""The minimal read side of the portal: what waits for me, and one entrustment's record.

The full role workspace (forms for every action) builds on these; access always goes
through `cases.access`, so the same 404 answers "missing" and "not yours".
"""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from .access import entrustment_for_user
from .selectors import reconciliation, visible_entrustments


@login_required
def home(request):
    entrustments = visible_entrustments(request.user).select_related("case", "bureau", "agency").order_by(
        "-state_changed_at", "-id"
    )
    page = Paginator(entrustments, 50).get_page(request.GET.get("page"))
    memberships = request.user.memberships.select_related("organisation").filter(is_active=True)
    return render(request, "cases/home.html", {"page": page, "memberships": memberships})


@login_required
def entrustment_detail(request, pk):
    entrustment = entrustment_for_user(request.user, pk)
    context = {
        "e": entrustment,
        "holdings": entrustment.holdings.select_related("asset"),
        "lots": entrustment.lots.select_related("asset"),
        "events": entrustment.events.select_related("actor", "actor_organisation"),
        "history": entrustment.history.select_related("history_user").order_by("-history_date")[:100],
        "recon": reconciliation(entrustment),
        "documents": entrustment.documents.select_related("issuer", "superseded_by").order_by(
            "type", "subject", "-version"),
    }
    return render(request, "cases/entrustment_detail.html", context)
