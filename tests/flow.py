"""Drive an entrustment through the lifecycle, step by step, with the real services.

`Flow(world).to("sold")` runs every service of the happy path up to that state, each
as the persona whose job it is. Tests then take the next step themselves.
"""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from cases import services, whitelist
from cases.demo import demo_address
from cases.models import Entrustment, Lot, WhitelistPurpose, WhitelistState
from cases.services import FillRecord, Observation, TransferRecord
from settlements import services as money

from .factories import BASIS_DATE, SEIZED_AT, VALUATION

STEPS = ["draft", "submitted", "accepted", "agency_appointed", "bonded", "detected", "in_custody", "reserve_set",
         "transferring", "at_platform", "selling", "sold", "proceeds_received", "fx_cleared", "credited",
         "remitted", "closed"]

REFERENCE_PRICES = {"BTC": ["60000", "61000", "62000"], "ETH": ["3000", "3100", "3200"]}
FEE = {"BTC": 1_000, "ETH": 21_000 * 10**9}  # a plausible network fee in base units


def custody_address(asset) -> str:
    return demo_address(asset.address_format, f"custody-{asset.symbol}")


def deposit_address(asset, platform_code: str = "osl") -> str:
    return demo_address(asset.address_format, f"{platform_code}-{asset.symbol}")


def whitelisted(world, agency, asset, address, *, purpose, platform=None):
    """Propose (as the agency's officer) and approve (as BCE's approver) one address, unless it already is."""
    proposer = world.agency_officer if agency == world.agency else world.agency_b_officer
    entry = whitelist.whitelist_propose(actor=proposer, organisation=agency, asset=asset, address=address,
                                        purpose=purpose, platform=platform)
    if entry.state == WhitelistState.PROPOSED:
        entry = whitelist.whitelist_approve(actor=world.bce_approver, entry=entry)
    return entry


def whitelist_test_addresses(world, assets=None):
    """The addresses the tests send coins to, whitelisted for both agencies of the world (the test policy has no
    cooling period): each asset's custody vault, and its deposit address at OSL and HashKey."""
    for asset in assets or (world.btc, world.eth, world.usdt):
        for agency in (world.agency, world.agency_b):
            whitelisted(world, agency, asset, custody_address(asset), purpose=WhitelistPurpose.CUSTODY)
            for platform in (world.osl, world.hashkey):
                whitelisted(world, agency, asset, deposit_address(asset, platform.code),
                            purpose=WhitelistPurpose.PLATFORM_DEPOSIT, platform=platform)


class Flow:
    def __init__(self, world, holdings=(("BTC", "2.5"), ("ETH", "10")), case_number="顺公立字〔2025〕100号"):
        self.w = world
        self.holdings_spec = holdings
        self.case_number = case_number
        self.entrustment: Entrustment | None = None

    def asset(self, symbol):
        return {"BTC": self.w.btc, "ETH": self.w.eth, "USDT": self.w.usdt}[symbol]

    def refresh(self) -> Entrustment:
        self.entrustment = Entrustment.objects.get(pk=self.entrustment.pk)
        return self.entrustment

    def to(self, state: str) -> Entrustment:
        current = self.entrustment.state if self.entrustment else None
        start = STEPS.index(current) + 1 if current else 0
        for step in STEPS[start:STEPS.index(state) + 1]:
            getattr(self, f"_{step}")()
            self.refresh()
            assert self.entrustment.state == step, (step, self.entrustment.state)
        return self.entrustment

    # --- the steps

    def _draft(self):
        w = self.w
        case = services.case_register(actor=w.shunyi_officer, bureau=w.shunyi, case_number=self.case_number,
                                      title="网络传销案", seized_at=SEIZED_AT, seizure_decision_no="顺扣〔2025〕1号",
                                      custodian="涉案财物管理中心")
        services.case_record_legal_basis(actor=w.shunyi_officer, case=case, kind="confiscation",
                                         document_no="顺没〔2025〕1号", basis_date=BASIS_DATE, authority="顺义分局")
        holdings = [
            services.holding_register(actor=w.shunyi_officer, case=case, asset=self.asset(symbol),
                                      address=demo_address(self.asset(symbol).address_format,
                                                           f"{self.case_number}-{symbol}-{i}"),
                                      amount=amount, location="硬件钱包")
            for i, (symbol, amount) in enumerate(self.holdings_spec)
        ]
        self.case = case
        self.entrustment = services.entrustment_create(actor=w.shunyi_officer, case=case, holdings=holdings,
                                                       bce=w.bce)

    def _submitted(self):
        services.entrustment_submit(actor=self.w.shunyi_approver, entrustment=self.entrustment)

    def _accepted(self):
        services.entrustment_accept(actor=self.w.bce_approver, entrustment=self.entrustment)

    def _agency_appointed(self):
        services.agency_appoint(actor=self.w.bce_officer, entrustment=self.entrustment, agency=self.w.agency,
                                valuation_cny=VALUATION, valuation_source="CoinMarketCap 30-day average",
                                qualification_note="licensed", capacity_note="custody HSM",
                                conflicts_declared="none")

    def _bonded(self):
        services.bond_post(actor=self.w.bce_officer, entrustment=self.entrustment,
                           posted_cny=VALUATION * Decimal("1.1"), reference="BG-0001")
        # Before any coin moves, as in practice: the agency's vault and deposit addresses are on its whitelist.
        whitelist_test_addresses(self.w, [self.asset(symbol) for symbol, _ in self.holdings_spec])

    def observations(self, **overrides):
        return [Observation(holding=h, observed_amount=overrides.get(h.asset.symbol, h.declared_amount),
                            block_height=900_000, controlled=True)
                for h in self.entrustment.holdings.select_related("asset")]

    def _detected(self):
        services.detection_record(actor=self.w.agency_officer, entrustment=self.entrustment,
                                  observations=self.observations(), witness=self.w.witness)

    def custody_transfers(self):
        return [TransferRecord(holding=h, asset=h.asset,
                               to_address=custody_address(h.asset),
                               amount=h.accepted_amount - FEE[h.asset.symbol], network_fee=FEE[h.asset.symbol],
                               txid=f"tx-custody-{h.pk}")
                for h in self.entrustment.holdings.select_related("asset")]

    def _in_custody(self):
        services.custody_receive(actor=self.w.agency_officer, entrustment=self.entrustment,
                                 transfers=self.custody_transfers())

    def _reserve_set(self):
        services.lots_plan(actor=self.w.bce_officer, entrustment=self.entrustment,
                           fee_allowances={self.asset(s).pk: FEE[s] for s, _ in self.holdings_spec})
        for lot in Lot.objects.filter(entrustment=self.entrustment).select_related("asset"):
            self.propose_and_approve_reserve(lot)

    def propose_and_approve_reserve(self, lot, price=None):
        prices = REFERENCE_PRICES[lot.asset.symbol]
        price = price or max(Decimal(p) for p in prices)
        services.reserve_propose(actor=self.w.bce_officer, lot=lot, price=price,
                                 inputs={"reference_prices": prices, "source": "Bitstamp daily close"})
        services.reserve_approve(actor=self.w.bce_approver, lot=lot)

    def _transferring(self):
        from cases.services import custody_balance

        deposits = []
        for asset in {h.asset for h in self.entrustment.holdings.select_related("asset")}:
            fee = FEE[asset.symbol]
            deposits.append(TransferRecord(holding=None, asset=asset,
                                           to_address=deposit_address(asset, self.w.osl.code),
                                           amount=custody_balance(self.entrustment, asset) - fee, network_fee=fee,
                                           txid="", from_address="custody"))
        services.platform_transfer_instruct(actor=self.w.agency_officer, entrustment=self.entrustment,
                                            platform=self.w.osl, deposits=deposits)

    def _at_platform(self):
        txids = {t.reference: f"tx-{t.reference}" for t in self.entrustment.transfers.filter(kind="to_platform")}
        services.platform_deposit_confirm(actor=self.w.agency_officer, entrustment=self.entrustment, txids=txids)

    def _selling(self):
        lot = self.entrustment.lots.order_by("sequence").first()
        services.inquiry_open(actor=self.w.agency_officer, lot=lot)

    def quote(self, lot, platform, price, ref):
        now = timezone.now()
        return services.quote_record(actor=self.w.agency_officer, lot=lot, platform=platform, reference=ref,
                                     price=Decimal(price), quantity=lot.quantity, quoted_at=now,
                                     expires_at=now + timedelta(seconds=30))

    def sell_lot(self, lot, *, premium=Decimal("100"), filled=None):
        """Open (if needed), quote from two platforms, award, approve and execute one lot."""
        lot.refresh_from_db()
        if lot.state != "inquiry":
            services.inquiry_open(actor=self.w.agency_officer, lot=lot)
        reserve = lot.current_reserve().price
        self.quote(lot, self.w.osl, reserve + premium, f"osl-{lot.pk}-{lot.rounds.count()}")
        self.quote(lot, self.w.hashkey, reserve + premium / 2, f"hk-{lot.pk}-{lot.rounds.count()}")
        services.inquiry_close(actor=self.w.agency_officer, lot=lot)
        services.award_approve(actor=self.w.bce_approver, lot=lot)
        quantity = lot.quantity if filled is None else filled
        price = reserve + premium
        gross = (Decimal(quantity) / lot.asset.unit * price).quantize(Decimal("0.01"))
        services.execution_record(actor=self.w.agency_officer, lot=lot, fills=[FillRecord(
            trade_id=f"T{lot.pk}", quantity=quantity, price=price, gross=gross,
            fee=(gross * Decimal("0.001")).quantize(Decimal("0.01")), executed_at=timezone.now())])

    def _sold(self):
        for lot in self.entrustment.lots.order_by("sequence"):
            self.sell_lot(lot)

    def _proceeds_received(self):
        from cases.models import net_proceeds_by_currency

        for currency, amount in net_proceeds_by_currency(self.entrustment).items():
            money.offshore_receipt_record(actor=self.w.agency_officer, entrustment=self.entrustment,
                                          bank=self.w.hk_bank, currency=currency, amount=amount,
                                          bank_reference=f"HKB-{self.entrustment.pk}-{currency}",
                                          value_date=timezone.localdate())

    RATE = Decimal("7.1234")

    def approve_fx(self, *approvers):
        """The agency's approvers approve the FX application (the worker submits it only once approved)."""
        from agencies.models import Role

        from .factories import member

        agency = self.entrustment.agency
        default = (self.w.agency_approver if agency == self.w.agency
                   else member(f"{agency.code}_approver", agency, Role.APPROVER))
        for approver in approvers or (default,):
            money.fx_application_approve(actor=approver, entrustment=self.entrustment)

    def _fx_cleared(self):
        self.approve_fx()
        for receipt in self.entrustment.offshore_receipts.all():
            money.fx_record_approval(actor=self.w.agency_officer, entrustment=self.entrustment,
                                     currency=receipt.currency, approval_reference="SAFE-1",
                                     bop_declaration_no="BOP-1", rate=self.RATE,
                                     amount_cny=(receipt.amount * self.RATE).quantize(Decimal("0.01")),
                                     slip_reference="FX-SLIP-1")

    def cny(self):
        return sum(f.amount_cny for f in self.entrustment.fx_conversions.filter(outcome="approved"))

    def _credited(self):
        money.special_account_credit_record(actor=self.w.shunyi_officer, entrustment=self.entrustment,
                                            amount_cny=self.cny(), slip_reference="CR-1")

    def _remitted(self):
        money.remittance_prepare(actor=self.w.shunyi_officer, entrustment=self.entrustment,
                                 payment_code=f"{self.entrustment.pk:020d}")
        money.remittance_approve(actor=self.w.shunyi_approver, entrustment=self.entrustment,
                                 treasury_receipt="TR-1")

    def _closed(self):
        money.entrustment_close(actor=self.w.bce_approver, entrustment=self.entrustment)
