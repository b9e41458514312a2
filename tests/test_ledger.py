"""The double-entry ledger: every movement posts a balanced transaction once, the invariants hold at each
step and in `manage.py reconcile`, and custody is compared with the chains every day."""

from collections import defaultdict
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import translation

from cases import services
from cases.models import TransferKind, net_proceeds_by_currency
from counterparties.chains.base import Balance, ChainAdapter
from counterparties.errors import TransientError
from counterparties.models import ExceptionKind, OperationalException
from ledger import postings
from ledger.invariants import InvariantBreach, check
from ledger.models import CNY, Account, AccountKind, Entry, Transaction, TransactionKind
from ledger.tasks import compare_onchain
from settlements import services as money

from .flow import FEE, Flow

K, T = AccountKind, TransactionKind


@pytest.fixture(autouse=True)
def english():
    """The messages and the table are asserted in English (the portal's default is Chinese)."""
    with translation.override("en"):
        yield


def balance(entrustment, kind, *, asset=None, currency="") -> int:
    accounts = Account.objects.filter(kind=kind, asset=asset, currency=currency)
    if kind not in (K.SEIZED, K.SEIZURE_DECLARED, K.SEIZURE_ADJUSTMENT):
        accounts = accounts.filter(entrustment=entrustment)
    else:
        accounts = accounts.filter(case=entrustment.case)
    return sum(Entry.objects.filter(account__in=accounts).values_list("amount", flat=True), 0)


def reconcile(*args) -> str:
    out = StringIO()
    call_command("reconcile", *args, stdout=out)
    return out.getvalue()


def assert_every_transaction_balances():
    totals = defaultdict(int)
    for key, asset_id, currency, amount in Entry.objects.values_list(
            "transaction__key", "account__asset_id", "account__currency", "amount"):
        totals[(key, asset_id or currency)] += amount
    assert totals and not {k: v for k, v in totals.items() if v}


def minor(amount: Decimal) -> int:
    return int(amount * 100)


# =========================================================================== the whole disposal


def test_a_whole_disposal_posts_every_movement_balanced_and_reconciles(flow):
    entrustment = flow.to("remitted")
    w = flow.w
    kinds = set(Transaction.objects.filter(case=entrustment.case).values_list("kind", flat=True))
    assert kinds == {T.SEIZURE, T.CUSTODY_RECEIPT, T.PLATFORM_TRANSFER, T.PLATFORM_DEPOSIT, T.FILL,
                     T.OFFSHORE_RECEIPT, T.CONVERSION, T.SPECIAL_ACCOUNT_CREDIT, T.REMITTANCE}
    assert_every_transaction_balances()

    for holding in entrustment.holdings.select_related("asset"):
        asset = holding.asset
        fills = sum(f.quantity for f in entrustment.lots.get(asset=asset, parent=None).fills.all())
        assert balance(entrustment, K.SEIZURE_DECLARED, asset=asset) == -holding.declared_amount
        assert balance(entrustment, K.SEIZED, asset=asset) == 0  # all of it left the seizure address
        assert balance(entrustment, K.NETWORK_FEES, asset=asset) == 2 * FEE[asset.symbol]
        assert balance(entrustment, K.SOLD, asset=asset) == fills
        assert balance(entrustment, K.IN_TRANSIT, asset=asset) == 0
        assert fills + 2 * FEE[asset.symbol] + balance(entrustment, K.CUSTODY, asset=asset) \
            + balance(entrustment, K.AT_PLATFORM, asset=asset) == holding.accepted_amount

    fills = [f for lot in entrustment.lots.all() for f in lot.fills.all()]
    assert balance(entrustment, K.SALE_PROCEEDS, currency="USD") == -sum(minor(f.gross) for f in fills)
    assert balance(entrustment, K.PLATFORM_FEES, currency="USD") == sum(minor(f.fee) for f in fills)
    assert balance(entrustment, K.PROCEEDS_AT_PLATFORM, currency="USD") == 0
    assert balance(entrustment, K.OFFSHORE, currency="USD") == 0
    assert balance(entrustment, K.SPECIAL_ACCOUNT, currency=CNY) == 0
    assert balance(entrustment, K.TREASURY, currency=CNY) == minor(entrustment.remittance.amount_cny)
    assert balance(entrustment, K.FX_EXCHANGE, currency=CNY) == -minor(entrustment.credit.amount_cny)

    out = reconcile("--entrustment", entrustment.number)
    assert "Reconciled" in out and entrustment.number in out
    money.entrustment_close(actor=w.bce_approver, entrustment=entrustment)
    assert flow.refresh().state == "closed"
    assert "Reconciled" in reconcile()


def test_an_accepted_detection_difference_is_posted_on_its_own_counter_account(world):
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕501号")
    entrustment = flow.to("bonded")
    short = 12_345
    services.detection_record(actor=world.agency_officer, entrustment=entrustment,
                              observations=flow.observations(BTC=250_000_000 - short), witness=world.witness)
    services.detection_accept_observed(actor=world.shunyi_approver, entrustment=entrustment,
                                       reason="The suspect paid a fee after the seizure list was drawn up.")
    assert balance(entrustment, K.SEIZURE_DECLARED, asset=world.btc) == -250_000_000
    assert balance(entrustment, K.SEIZURE_ADJUSTMENT, asset=world.btc) == short
    assert balance(entrustment, K.SEIZED, asset=world.btc) == 250_000_000 - short
    flow.refresh()
    flow.to("remitted")
    assert "Reconciled" in reconcile()


# =========================================================================== no step posts twice


def test_a_retried_posting_posts_nothing_twice(flow):
    entrustment = flow.to("at_platform")
    before = Transaction.objects.count()
    postings.post_custody_receipts(entrustment)
    for transfer in entrustment.transfers.filter(kind=TransferKind.TO_PLATFORM):
        postings.post_platform_transfer(transfer)
        postings.post_platform_deposit(transfer)
    postings.post_seizure(entrustment.holdings.first())
    assert Transaction.objects.count() == before
    # A key is the movement: reusing it for other entries is refused, not ignored.
    holding = entrustment.holdings.select_related("asset").first()
    seized = postings.account(K.SEIZED, case=entrustment.case, asset=holding.asset, address=holding.address)
    declared = postings.account(K.SEIZURE_DECLARED, case=entrustment.case, asset=holding.asset)
    with pytest.raises(postings.LedgerError, match="already posted with other entries"):
        postings.post(key=f"seizure:{holding.pk}", kind=T.SEIZURE, case=entrustment.case, entrustment=None,
                      description="again", entries=[(seized, 1), (declared, -1)])


def test_a_posting_that_does_not_balance_is_refused(flow):
    entrustment = flow.to("in_custody")
    holding = entrustment.holdings.select_related("asset").first()
    seized = postings.account(K.SEIZED, case=entrustment.case, asset=holding.asset, address=holding.address)
    usd = postings.account(K.OFFSHORE, case=entrustment.case, entrustment=entrustment, currency="USD")
    with pytest.raises(postings.LedgerError, match="do not balance"):
        postings.post(key="forged", kind=T.SEIZURE, case=entrustment.case, entrustment=entrustment,
                      description="coins for dollars", entries=[(seized, 100), (usd, -100)])
    assert not Transaction.objects.filter(key="forged").exists()


# =========================================================================== the exception paths


def test_partial_fills_and_the_remainder_lot_are_posted_as_sold(world):
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕502号")
    flow.to("selling")
    lot = flow.entrustment.lots.get()
    flow.sell_lot(lot, filled=lot.quantity * 3 // 5)
    entrustment = flow.refresh()
    assert balance(entrustment, K.SOLD, asset=world.btc) == lot.quantity * 3 // 5
    assert balance(entrustment, K.AT_PLATFORM, asset=world.btc) == lot.quantity - lot.quantity * 3 // 5
    check(entrustment)
    remainder = lot.remainders.get()
    flow.propose_and_approve_reserve(remainder)
    flow.sell_lot(remainder)
    entrustment = flow.refresh()
    assert balance(entrustment, K.SOLD, asset=world.btc) == lot.quantity
    assert balance(entrustment, K.AT_PLATFORM, asset=world.btc) == 0
    assert Transaction.objects.filter(entrustment=entrustment, kind=T.FILL).count() == 2
    flow.to("closed")
    assert "Reconciled" in reconcile()


def test_an_fx_rejection_posts_nothing_and_the_resubmitted_conversion_posts_once(flow):
    w = flow.w
    entrustment = flow.to("proceeds_received")
    money.fx_record_rejection(actor=w.agency_officer, entrustment=entrustment, currency="USD",
                              reason="SAFE asks for the judgment.")
    assert not Transaction.objects.filter(entrustment=entrustment, kind=T.CONVERSION).exists()
    assert balance(entrustment, K.OFFSHORE, currency="USD") == minor(entrustment.offshore_receipts.get().amount)
    money.fx_resubmit(actor=w.agency_officer, entrustment=entrustment, reason="Judgment attached.")
    flow.to("credited")
    assert Transaction.objects.filter(entrustment=entrustment, kind=T.CONVERSION).count() == 1
    assert balance(entrustment, K.OFFSHORE, currency="USD") == 0
    assert "Reconciled" in reconcile()


def test_returns_to_victims_and_the_remittance_share_the_credit(flow):
    w = flow.w
    entrustment = flow.to("credited")
    victim_return = money.victim_return_prepare(actor=w.shunyi_officer, entrustment=entrustment, recipient="张三",
                                                recipient_account="6222", amount_cny="1000.00", basis="判决第二项")
    assert not Transaction.objects.filter(kind=T.VICTIM_RETURN).exists()  # prepared is not paid
    money.victim_return_approve(actor=w.shunyi_approver, victim_return=victim_return)
    assert balance(entrustment, K.VICTIMS, currency=CNY) == 100_000
    entrustment = flow.to("closed")
    credit = minor(entrustment.credit.amount_cny)
    assert balance(entrustment, K.TREASURY, currency=CNY) == credit - 100_000
    assert balance(entrustment, K.SPECIAL_ACCOUNT, currency=CNY) == 0
    assert "Reconciled" in reconcile()


def test_a_failed_deposit_comes_back_to_custody_with_its_fee_and_the_new_one_reaches_the_platform(flow):
    w = flow.w
    entrustment = flow.to("transferring")
    custody_before = balance(entrustment, K.CUSTODY, asset=w.btc)
    services.platform_transfer_fail(actor=w.agency_officer, entrustment=entrustment, reason="Address rejected.")
    entrustment = flow.refresh()
    assert balance(entrustment, K.IN_TRANSIT, asset=w.btc) == 0
    transfer = entrustment.transfers.get(kind=TransferKind.TO_PLATFORM, asset=w.btc)
    assert balance(entrustment, K.CUSTODY, asset=w.btc) == custody_before + transfer.amount + transfer.network_fee
    flow._transferring()
    flow.refresh()
    flow.to("sold")
    assert balance(entrustment, K.NETWORK_FEES, asset=w.btc) == 2 * FEE["BTC"]  # the failed one cost nothing
    assert "Reconciled" in reconcile()


# =========================================================================== breaches


def test_an_invariant_breach_rolls_the_service_call_back(flow):
    """A platform fee lowered behind the services' back: the record agrees with itself, the ledger does not."""
    w = flow.w
    entrustment = flow.to("sold")
    fill = entrustment.lots.order_by("sequence").first().fills.get()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE cases_fill SET fee = %s WHERE id = %s", [fill.fee - Decimal("1.00"), fill.pk])
    before = Transaction.objects.count()
    with pytest.raises(InvariantBreach) as breach:
        money.offshore_receipt_record(actor=w.agency_officer, entrustment=entrustment, bank=w.hk_bank,
                                      currency="USD", amount=net_proceeds_by_currency(entrustment)["USD"],
                                      bank_reference="HKB-1", value_date=fill.executed_at.date())
    assert "Platform fees" in breach.value.message and "difference 1.00" in breach.value.message
    assert not entrustment.offshore_receipts.exists()
    assert flow.refresh().state == "sold"
    assert Transaction.objects.count() == before


def test_a_record_changed_behind_the_services_back_stops_the_next_step(flow):
    entrustment = flow.to("reserve_set")
    custody = entrustment.transfers.get(kind=TransferKind.TO_CUSTODY, asset=flow.w.btc)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE cases_cointransfer SET amount = %s WHERE id = %s",
                       [str(custody.amount + 1) if connection.vendor == "sqlite" else custody.amount + 1, custody.pk])
    with pytest.raises(InvariantBreach, match="Agency custody"):
        flow._transferring()
    entrustment = flow.refresh()
    assert entrustment.state == "reserve_set"
    assert not entrustment.transfers.filter(kind=TransferKind.TO_PLATFORM).exists()
    assert not Transaction.objects.filter(kind=T.PLATFORM_TRANSFER).exists()


def test_a_forged_entry_makes_reconcile_fail_and_name_the_transaction(flow):
    entrustment = flow.to("remitted")
    remitted = Transaction.objects.get(entrustment=entrustment, kind=T.REMITTANCE)
    treasury = remitted.entries.get(account__kind=K.TREASURY).account
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO ledger_entry (transaction_id, account_id, amount) VALUES (%s, %s, %s)",
                       [remitted.pk, treasury.pk, "1" if connection.vendor == "sqlite" else 1])
    out = StringIO()
    with pytest.raises(CommandError, match="differ"):
        call_command("reconcile", stdout=out)
    table = out.getvalue()
    assert f"transaction {remitted.key} balances" in table
    assert entrustment.number in table and "State treasury" in table
    assert "0.01" in table
    with pytest.raises(InvariantBreach):
        money.entrustment_close(actor=flow.w.bce_approver, entrustment=entrustment)
    assert flow.refresh().state == "remitted"


def test_the_ledger_cannot_be_changed_or_deleted(flow):
    entrustment = flow.to("in_custody")
    entry = Entry.objects.filter(transaction__entrustment=entrustment).first()
    with pytest.raises(PermissionError):
        Entry.objects.filter(pk=entry.pk).update(amount=0)
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        Transaction.objects.all().delete()
    for sql in ("UPDATE ledger_entry SET amount = amount WHERE id = %s", "DELETE FROM ledger_entry WHERE id = %s"):
        with pytest.raises(Exception, match="append-only"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [entry.pk])


# =========================================================================== the chains, daily


class FakeChain:
    """What compare_onchain needs of a chain adapter: balances by address, or a node that is down."""

    def __init__(self, chain: str, balances: dict[str, int], *, down: bool = False):
        self.chain, self.balances, self.down, self.asked = chain, balances, down, []

    def tip_height(self) -> int:
        return 900_100

    def balance(self, address, asset):
        self.asked.append((address, asset.symbol))
        if self.down:
            raise TransientError("connection refused", party=f"{self.chain}-node", code="CONNECTION")
        return Balance(address=address, amount=self.balances.get(address, 0), height=900_100)

    def transfers_to(self, address, asset, since_height=0):
        return []

    def transaction(self, txid, asset, seen_block_hash=""):
        raise NotImplementedError


@pytest.fixture
def custody(world):
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕503号")
    entrustment = flow.to("in_custody")
    transfer = entrustment.transfers.get(kind=TransferKind.TO_CUSTODY)
    return entrustment, transfer.to_address, transfer.amount


def use_chain(monkeypatch, chain):
    monkeypatch.setattr("counterparties.chains.registry.chain_for_asset", lambda asset: chain)


def test_custody_that_agrees_with_the_chain_raises_nothing(custody, monkeypatch):
    entrustment, address, amount = custody
    chain = FakeChain("bitcoin", {address: amount})
    assert isinstance(chain, ChainAdapter)
    use_chain(monkeypatch, chain)
    assert compare_onchain("2026-01-05") == {"equal": 1, "different": 0, "unreachable": 0, "not_watched": 0}
    assert chain.asked == [(address, "BTC")]
    assert not OperationalException.objects.exists()


def test_custody_that_differs_from_the_chain_is_a_reconciliation_exception(custody, monkeypatch):
    entrustment, address, amount = custody
    use_chain(monkeypatch, FakeChain("bitcoin", {address: amount - 1_000}))
    assert compare_onchain("2026-01-05")["different"] == 1
    compare_onchain("2026-01-05")  # the same day again: the same exception, seen twice
    exception = OperationalException.objects.get()
    assert exception.kind == ExceptionKind.RECONCILIATION and exception.entrustment == entrustment
    assert exception.key == f"onchain:BTC@bitcoin:{address}:2026-01-05"
    assert exception.occurrences == 2
    assert exception.details["ledger"] == str(amount) and exception.details["chain_balance"] == str(amount - 1_000)
    assert "-0.00001000" in exception.message


def test_a_chain_that_does_not_answer_is_an_outage_not_a_crash(custody, monkeypatch):
    entrustment, address, amount = custody
    use_chain(monkeypatch, FakeChain("bitcoin", {}, down=True))
    assert compare_onchain("2026-01-05")["unreachable"] == 1
    exception = OperationalException.objects.get()
    assert exception.kind == ExceptionKind.OUTAGE and exception.entrustment == entrustment
    assert address in exception.message


def test_a_chain_without_a_node_is_not_watched(custody, monkeypatch):
    use_chain(monkeypatch, None)
    assert compare_onchain("2026-01-05")["not_watched"] == 1
    assert not OperationalException.objects.exists()


def test_the_comparison_is_scheduled_daily(db):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="ledger.tasks.compare_onchain")
    assert task.crontab is not None and task.crontab.hour == "2" and task.crontab.minute == "30"


# =========================================================================== on the page


def test_the_ledger_table_shows_each_figure_beside_the_record_and_flags_a_difference(flow):
    from django.template import Context, Template

    entrustment = flow.to("in_custody")
    page = Template("{% load ledger_tags %}{% ledger_table entrustment %}")
    html = page.render(Context({"entrustment": entrustment}))
    assert "The ledger agrees with the record." in html and "Agency custody" in html
    custody = entrustment.transfers.get(kind=TransferKind.TO_CUSTODY, asset=flow.w.btc)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE cases_cointransfer SET network_fee = %s WHERE id = %s",
                       [str(custody.network_fee + 5) if connection.vendor == "sqlite" else custody.network_fee + 5,
                        custody.pk])
    html = page.render(Context({"entrustment": entrustment}))
    assert 'role="alert"' in html and 'class="error"' in html and "0.00000005" in html


# =========================================================================== history from before the ledger


def test_the_backfill_posts_a_history_recorded_before_the_ledger_and_is_idempotent(world, monkeypatch):
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕504号")
    with monkeypatch.context() as before_the_ledger, postings.checks_deferred():
        before_the_ledger.setattr("ledger.postings.post", lambda **kwargs: None)
        flow.to("transferring")
    assert not Transaction.objects.exists()
    out = StringIO()
    call_command("ledger_backfill", stdout=out)
    assert "every entrustment agrees" in out.getvalue()
    posted = Transaction.objects.count()
    assert set(Transaction.objects.values_list("kind", flat=True)) == {T.SEIZURE, T.CUSTODY_RECEIPT,
                                                                        T.PLATFORM_TRANSFER}
    call_command("ledger_backfill", stdout=StringIO())
    assert Transaction.objects.count() == posted
    flow.to("remitted")  # the services go on posting on top of the backfilled history
    assert "Reconciled" in reconcile()


def test_a_failed_deposit_gives_back_what_left_custody_including_a_fee_posted_at_broadcast(flow):
    w = flow.w
    entrustment = flow.to("transferring")
    transfer = entrustment.transfers.get(kind=TransferKind.TO_PLATFORM, asset=w.btc)
    custody_before = balance(entrustment, K.CUSTODY, asset=w.btc)
    # Postings only (the record's fee is already in this flow's instruction, so the figures are not checked):
    # a fee custody reported at broadcast leaves custody too, and a failure must return it with the rest.
    with postings.checks_deferred():
        assert postings.post_platform_transfer_fee(transfer) is not None
        assert balance(entrustment, K.CUSTODY, asset=w.btc) == custody_before - transfer.network_fee
        postings.post_transfer_failed(transfer)
    assert balance(entrustment, K.IN_TRANSIT, asset=w.btc) == 0
    assert balance(entrustment, K.CUSTODY, asset=w.btc) == custody_before + transfer.amount + transfer.network_fee
