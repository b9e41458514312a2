from decimal import Decimal

from agencies.models import BondState
from cases.models import Event, EventType
from cases.selectors import reconciliation


def test_a_case_goes_from_draft_to_closed_and_reconciles(flow):
    entrustment = flow.to("closed")
    assert entrustment.state == "closed"
    recon = reconciliation(entrustment)
    assert recon.problems == []
    assert recon.credited_cny == recon.remitted_cny > 0
    assert entrustment.current_bond().state == BondState.RELEASED
    assert entrustment.sla_started_at and entrustment.sla_stopped_at


def test_each_transition_writes_one_history_row_and_one_event(flow):
    entrustment = flow.to("accepted")
    history = list(entrustment.history.order_by("history_date"))
    assert [h.state for h in history] == ["draft", "submitted", "accepted"]
    assert history[1].history_user == flow.w.shunyi_approver
    transitions = Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION)
    assert [(e.from_state, e.to_state) for e in transitions] == [("draft", "submitted"), ("submitted", "accepted")]
    assert transitions[0].actor == flow.w.shunyi_approver
    assert transitions[0].actor_organisation == flow.w.shunyi


def test_coins_reconcile_per_asset(flow):
    entrustment = flow.to("sold")
    lines = {line.asset.symbol: line for line in reconciliation(entrustment).coins}
    btc = lines["BTC"]
    assert btc.declared == 250_000_000
    assert btc.sold + btc.network_fees + btc.still_held == btc.declared
    assert btc.still_held == 0
    assert isinstance(btc.sold, int)
    assert lines["ETH"].declared == 10 * 10**18
    assert lines["ETH"].sold + lines["ETH"].network_fees == 10 * 10**18
    assert all(isinstance(v, Decimal) for v in (m.net_proceeds for m in reconciliation(entrustment).money))


def test_entrustments_are_numbered_in_sequence_per_year(flow, world):
    from django.utils import timezone

    from tests.flow import Flow

    first = flow.to("draft")
    second = Flow(world, case_number="顺公立字〔2025〕101号").to("draft")
    year = timezone.localdate().year
    assert first.number == f"WT-{year}-000001" and second.number == f"WT-{year}-000002"
