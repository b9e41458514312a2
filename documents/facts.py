"""What each official document certifies, read from the record; and who issues it.

`build_context(doc_type, entrustment, subject)` gathers the facts one document prints and
returns the template context for `documents/rendering.py`. It refuses (`MissingFacts`, naming
every missing item) when a fact the document certifies is not on the record: a document is
never printed with blanks. `context["facts"]` is the short list of key facts, label → plain
string; it is printed on the document's first page and the public verify page shows exactly it.

Amounts: coins in the asset's base units via `Asset.format_amount` with the symbol; CNY in
figures and in capitals (`numerals.cny_capital`); USD/HKD in figures. Times in Beijing time.
Reads are a handful of queries per document; lists that can be long (holdings) are read with
one query each and no per-row queries.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone, translation

from agencies.models import Appointment, Organisation, OrgKind
from cases.models import (
    CoinTransfer,
    Detection,
    EvidenceFile,
    EvidenceKind,
    Event,
    EventType,
    Fill,
    Holding,
    InquiryRound,
    Lot,
    ReservePrice,
    ReserveRule,
    TransferKind,
    TransferStatus,
    net_proceeds_by_currency,
)

from .models import DocumentType
from .numerals import cny_capital

D = DocumentType

# --------------------------------------------------------------------------- errors and issuers


class MissingFacts(Exception):
    """The record lacks facts the document certifies. `.missing` lists them in human words."""

    def __init__(self, doc_type: str, missing: list[str]):
        self.doc_type = doc_type
        self.missing = list(missing)
        super().__init__(f"Missing facts for {type_label(doc_type)}: {'; '.join(self.missing)}")


def type_label(doc_type: str) -> str:
    try:
        with translation.override("en"):
            return str(DocumentType(doc_type).label)
    except ValueError:
        return doc_type


ISSUER_ROLE = {
    D.AGREEMENT: "bce",
    D.APPOINTMENT: "bce",
    D.BOND_CERTIFICATE: "bce",
    D.RESERVE_DETERMINATION: "bce",
    D.FINAL_REPORT: "bce",
    D.ENTRUSTMENT_LETTER: "bureau",
    D.CREDIT_NOTICE: "bureau",
    D.TREASURY_REMITTANCE: "bureau",
    D.RETURN_LIST: "bureau",
    D.DETECTION_REPORT: "agency",
    D.HANDOVER_RECORD: "agency",
    D.INQUIRY_RECORD: "agency",
    D.SALE_CONFIRMATION: "agency",
    D.FX_APPLICATION: "agency",
}


def issuer_for(doc_type: str, entrustment) -> Organisation:
    """The organisation that issues and signs the document (its seal and signature)."""
    try:
        role = ISSUER_ROLE[DocumentType(doc_type)]
    except ValueError:
        raise ValueError(f"Unknown document type: {doc_type!r}") from None
    issuer = getattr(entrustment, role)
    if issuer is None:
        raise MissingFacts(doc_type, ["the service agency (no agency is appointed) 服务机构"])
    return issuer


# --------------------------------------------------------------------------- titles and labels

TITLES = {  # type → (Chinese title, English subtitle)
    D.AGREEMENT: ("虚拟货币处置业务协议", "Virtual Currency Disposal Service Agreement"),
    D.ENTRUSTMENT_LETTER: ("委托书", "Letter of Entrustment"),
    D.APPOINTMENT: ("服务机构确认书", "Service Agency Appointment"),
    D.BOND_CERTIFICATE: ("履约保证金凭证", "Performance Bond Certificate"),
    D.DETECTION_REPORT: ("检测报告", "Detection Report"),
    D.HANDOVER_RECORD: ("交接清单", "Hand-over Record"),
    D.RESERVE_DETERMINATION: ("保留价确定书", "Reserve Price Determination"),
    D.INQUIRY_RECORD: ("询价记录及报价比较表", "Inquiry Record and Quote Comparison"),
    D.SALE_CONFIRMATION: ("成交确认书", "Sale Confirmation"),
    D.FX_APPLICATION: ("结汇申请书", "FX Settlement Application"),
    D.CREDIT_NOTICE: ("涉案款专用账户入账通知", "Special Case-funds Account Credit Notice"),
    D.TREASURY_REMITTANCE: ("非税收入一般缴款书", "General Payment Form for Non-tax Revenue (as remitted)"),
    D.RETURN_LIST: ("发还清单", "List of Returns to Victims"),
    D.FINAL_REPORT: ("处置报告", "Final Disposal Report"),
}

BCE_EN = "Beijing Equity Exchange (CBEX)"  # not "北交所" in English: that is the Beijing Stock Exchange

ENTRUSTMENT_STATE_ZH = {
    "draft": "草稿", "submitted": "已委托，待北交所受理", "returned": "退回补正", "refused": "不予受理",
    "accepted": "北交所已受理", "agency_appointed": "已确定服务机构，待缴保证金", "bonded": "已缴履约保证金",
    "detected": "链上检测一致", "detection_mismatch": "检测不一致", "in_custody": "已接收托管",
    "reserve_set": "已确定保留价", "transferring": "移交境外平台中", "transfer_failed": "移交失败",
    "aml_hold": "平台反洗钱审查中", "at_platform": "已存入境外平台", "selling": "询价处置中", "sold": "已成交",
    "proceeds_received": "境外已收款", "fx_rejected": "结汇被拒", "fx_cleared": "已审批结汇",
    "credited": "已入专户", "remitted": "已上缴国库", "closed": "已结案归档", "cancelled": "已撤销",
    "terminated": "未成交终止", "agency_default": "服务机构违约", "disputed": "争议中",
}
LOT_STATE_ZH = {
    "planned": "待定保留价", "reserve_set": "已定保留价", "inquiry": "询价中", "award_pending": "拟成交待审批",
    "executing": "已批准，执行中", "executed": "已成交", "partially_executed": "部分成交", "no_deal": "未成交",
    "suspended": "市场暂停", "exhausted": "流拍终止",
}
EVENT_TYPE_ZH = {
    "case_registered": "案件登记", "legal_basis_recorded": "记录处置依据", "holding_registered": "登记涉案财物",
    "evidence_added": "添加证据材料", "entrustment_created": "起草委托", "approval_given": "审批",
    "transition": "状态变更", "lot_transition": "批次状态变更", "agency_appointed": "确定服务机构",
    "bond_posted": "缴纳履约保证金", "bond_released": "退还履约保证金", "bond_forfeited": "没收履约保证金",
    "detection_recorded": "记录链上检测", "transfer_recorded": "记录链上转账", "reserve_proposed": "提出保留价",
    "quote_recorded": "记录报价", "fill_recorded": "记录成交", "settlement_recorded": "记录结算步骤",
    "sla_warning": "时限预警", "document_issued": "出具文书", "document_refused": "文书未能出具",
}
HOLDING_STATUS_ZH = {
    "declared": "已申报", "verified": "链上核验", "mismatch": "检测不一致", "in_custody": "已入托管",
    "at_platform": "已存入平台",
}
LEGAL_BASIS_ZH = {"judgment": "生效判决", "confiscation": "没收决定", "pre_judgment": "先行处置（所有人同意并经批准）"}
APPROVAL_LEVEL_ZH = {"county": "县级", "city": "市级", "province": "省级", "national": "国家级"}
CHANNEL_ZH = {
    "bce_hk": "北京产权交易所 + 香港持牌虚拟资产交易平台", "court_offshore": "法院主导境外处置",
    "issuer_buyback": "发行方回购", "legacy_third_party": "第三方处置公司（仅存档旧案）",
}
BOND_STATE_ZH = {"posted": "已缴纳", "released": "已退还", "forfeited": "已没收"}
SETTLEMENT_STEP_ZH = {
    "offshore_receipt": "境外收款", "fx": "外汇审批及结汇", "victim_return_prepared": "拟定发还",
    "victim_return_approved": "批准发还", "remittance_prepared": "拟定缴库",
}


def en(choice_cls, value) -> str:
    """The English label of a model choice (the document's subtitles are English)."""
    try:
        with translation.override("en"):
            return str(choice_cls(value).label)
    except ValueError:
        return str(value)


def reserve_rule_zh(rule: str, policy) -> str:
    if rule == ReserveRule.REFERENCE_AVERAGE:
        return f"参考均价：不低于交易日前 {policy.reference_days} 个交易日的平均价格"
    if rule == ReserveRule.VALUATION:
        return (f"估值定价：首轮保留价等于估值；流拍后每轮降幅不超过上一轮保留价的 {pct(policy.max_reserve_cut)}，"
                f"最多 {policy.max_failed_rounds} 轮")
    if rule == ReserveRule.ISSUER_BUYBACK:
        return f"发行方回购：原则上不低于面值的 {pct(policy.buyback_floor_ratio)}"
    return str(rule)


# --------------------------------------------------------------------------- formatting


def pct(ratio: Decimal) -> str:
    return f"{(ratio * 100).normalize():f}%"


def num(value: Decimal, min_places: int = 2) -> str:
    """Grouped figures without float; trailing zeros beyond `min_places` dropped (62,000.5 not 62,000.50000000)."""
    value = Decimal(value)
    places = max(min_places, -value.normalize().as_tuple().exponent)
    return f"{value:,.{places}f}"


def money(amount: Decimal, currency: str) -> str:
    return f"{currency} {Decimal(amount):,.2f}"


def cny(amount: Decimal) -> str:
    return money(amount, "CNY")


def cny_caps(amount: Decimal) -> str:
    return "人民币" + cny_capital(Decimal(amount))


def cny_both(amount: Decimal) -> str:
    return f"{cny(amount)}（{cny_caps(amount)}）"


def coins(asset, units: int) -> str:
    return f"{asset.format_amount(units)} {asset.symbol}"


def when(dt) -> str:
    return timezone.localtime(dt).strftime("%Y-%m-%d %H:%M:%S") if dt else ""


def day(d) -> str:
    return d.strftime("%Y-%m-%d") if d else ""


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap


def org_en(org: Organisation | None) -> str:
    if org is None:
        return ""
    if org.kind == OrgKind.BCE:
        return BCE_EN
    return org.name_en


def party(role_zh: str, role_en: str, org: Organisation | None, detail: str = "") -> dict:
    return {"role_zh": role_zh, "role_en": role_en, "name": org.name if org else "", "name_en": org_en(org),
            "detail": detail}


def signer(role_zh: str, role_en: str, org: Organisation | None) -> dict:
    return {"role_zh": role_zh, "role_en": role_en, "name": org.name if org else "", "name_en": org_en(org)}


def person(user) -> str:
    if user is None:
        return ""
    return user.get_full_name() or user.get_username()


class Needs:
    """Collects every missing fact before refusing, so the refusal names them all."""

    def __init__(self, doc_type: str):
        self.doc_type = doc_type
        self.missing: list[str] = []

    def check(self, present, what: str) -> bool:
        if present is None or present == "" or present == [] or present is False:
            self.missing.append(what)
            return False
        return True

    def add(self, what: str) -> None:
        self.missing.append(what)

    def raise_if_missing(self) -> None:
        if self.missing:
            raise MissingFacts(self.doc_type, self.missing)


# --------------------------------------------------------------------------- shared reads


def holding_rows(entrustment) -> list[dict]:
    """Every holding of the entrustment: one query, no per-row reads."""
    rows = []
    for h in Holding.objects.filter(entrustment=entrustment).select_related("asset").order_by("asset__symbol", "id"):
        rows.append({"holding": h, "asset": h.asset, "address": h.address,
                     "declared": coins(h.asset, h.declared_amount), "accepted": coins(h.asset, h.accepted_amount),
                     "location": h.location, "status": HOLDING_STATUS_ZH.get(h.status, h.status)})
    return rows


def asset_totals(rows: list[dict], field: str = "declared_amount") -> list[dict]:
    totals: dict = {}
    for row in rows:
        h = row["holding"]
        line = totals.setdefault(h.asset_id, {"asset": h.asset, "count": 0, "units": 0})
        line["count"] += 1
        line["units"] += getattr(h, field)
    return [{**t, "amount": coins(t["asset"], t["units"])} for t in totals.values()]


def listing(columns: list[tuple[str, bool]], rows: list[tuple], chunk: int = 60) -> dict:
    """A fixed-width text table for long lists: WeasyPrint lays out monospaced lines ~20× faster
    than table cells (10,000 rows: ~2 s instead of ~50 s). `columns` are (heading, right-aligned)."""
    widths = [display_width(h) for h, _ in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], display_width(cell))
    header = "  ".join(pad(h, widths[i], right) for i, (h, right) in enumerate(columns)).rstrip()
    lines = ["  ".join(pad(cell, widths[i], columns[i][1]) for i, cell in enumerate(row)).rstrip() for row in rows]
    total = sum(widths) + 2 * (len(widths) - 1)
    return {"header": header,
            "chunks": ["\n".join(lines[i:i + chunk]) for i in range(0, len(lines), chunk)],
            "count": len(rows), "size": "small" if total > 118 else "normal"}


# Above this many rows a per-row list is printed as fixed-width text instead of a table (see `listing`).
TABLE_ROWS_MAX = 200


def first_event(entrustment, **filters):
    return Event.objects.filter(entrustment=entrustment, **filters).order_by("created_at", "id").first()


def last_event(entrustment, **filters):
    return Event.objects.filter(entrustment=entrustment, **filters).order_by("-created_at", "-id").first()


def lot_from_subject(doc_type: str, entrustment, subject: str) -> Lot:
    prefix, _, pk = (subject or "").partition(":")
    if prefix != "lot" or not pk.isdigit():
        raise ValueError(f"{type_label(doc_type)} is issued per lot: subject must be 'lot:<pk>', not {subject!r}")
    try:
        return Lot.objects.select_related("asset", "parent").get(pk=int(pk), entrustment=entrustment)
    except Lot.DoesNotExist:
        raise ValueError(f"Lot {pk} is not a lot of entrustment {entrustment.number}") from None


def lot_label(lot: Lot) -> str:
    return f"第 {lot.sequence} 批（L{lot.sequence}）· {coins(lot.asset, lot.quantity)}"


def common(doc_type: str, entrustment, subject: str) -> dict:
    title_zh, title_en = TITLES[DocumentType(doc_type)]
    issuer = issuer_for(doc_type, entrustment)
    case = entrustment.case
    return {
        "doc_type": str(doc_type),
        "title_zh": title_zh,
        "title_en": title_en,
        "issuer": issuer,
        "issuer_en": org_en(issuer),
        "entrustment": entrustment,
        "case": case,
        "subject": subject,
        "bureau": entrustment.bureau,
        "bce": entrustment.bce,
        "bce_en": BCE_EN,
        "agency": entrustment.agency,
        "state_zh": ENTRUSTMENT_STATE_ZH.get(entrustment.state, entrustment.state),
        "facts": {"案件编号": case.case_number, "委托编号": entrustment.number},
        "parties": [],
        "signatures": [],
    }


def basis_text(case) -> str:
    parts = [LEGAL_BASIS_ZH.get(case.legal_basis, case.legal_basis), case.basis_document_no,
             day(case.basis_date), case.basis_authority]
    return " · ".join(p for p in parts if p)


# --------------------------------------------------------------------------- per type


def _agreement(ctx, e, need: Needs):
    accepted = first_event(e, type=EventType.TRANSITION, to_state="accepted")
    need.check(accepted, "BCE's acceptance of the entrustment 北交所受理记录")
    rows = holding_rows(e)
    need.check(rows, "the holdings entrusted 委托处置的涉案财物")
    need.raise_if_missing()
    policy = e.policy
    totals = asset_totals(rows)
    ctx.update(
        holdings=rows, totals=totals, policy=policy, accepted_at=when(accepted.created_at),
        channel_zh=CHANNEL_ZH.get(e.channel, e.channel), channel_en=en(_channel_cls(), e.channel),
        reserve_rule_zh=reserve_rule_zh(policy.reserve_rule, policy),
        reserve_rule_en=en(ReserveRule, policy.reserve_rule),
        bond_ratio=pct(policy.bond_ratio), max_cut=pct(policy.max_reserve_cut),
        inventory=_holdings_listing(rows, with_location=True),
        parties=[party("甲方（委托方）", "Party A (entrusting bureau)", e.bureau),
                 party("乙方（受托方）", "Party B (entrusted exchange)", e.bce)],
        signatures=[signer("甲方", "Party A", e.bureau), signer("乙方", "Party B", e.bce)],
    )
    ctx["facts"].update({
        "委托方": e.bureau.name,
        "受托方": f"{e.bce.name}（{BCE_EN}）",
        "涉案财物": "；".join(f"{t['asset'].symbol} {t['amount']}（{t['count']} 个地址）" for t in totals),
        "处置渠道": ctx["channel_zh"],
        "履约保证金比例": f"不低于估值的 {ctx['bond_ratio']}",
        "保留价规则": ctx["reserve_rule_zh"],
        "处置时限": f"检测至入专户 {policy.sla_hours} 小时",
        "受理时间": ctx["accepted_at"],
    })


def _channel_cls():
    from cases.models import DisposalChannel

    return DisposalChannel


def _holdings_listing(rows, *, with_location=False, with_status=False):
    columns = [("序号", True), ("币种", False), ("地址 Address", False), ("申报数量 Declared", True)]
    if with_status:
        columns += [("接受数量 Accepted", True), ("状态", False)]
    if with_location:
        columns += [("存放位置 Location", False)]
    data = []
    for n, r in enumerate(rows, start=1):
        h = r["holding"]
        row = [str(n), h.asset.symbol, h.address, h.asset.format_amount(h.declared_amount)]
        if with_status:
            row += [h.asset.format_amount(h.accepted_amount), r["status"]]
        if with_location:
            row += [h.location]
        data.append(tuple(row))
    return listing(columns, data)


def _entrustment_letter(ctx, e, need: Needs):
    case = e.case
    need.check(case.legal_basis, "the legal basis for disposal (judgment, confiscation decision or "
                                 "pre-judgment approval) 处置依据种类")
    need.check(case.basis_document_no, "the number of the basis document 依据文书编号")
    need.check(case.basis_date, "the date of the basis document 依据文书日期")
    need.check(case.basis_authority, "the authority that issued the basis document 出具机关")
    if case.legal_basis == "pre_judgment":
        need.check(case.owner_consent, "the owner's consent to pre-judgment disposal 所有人同意")
        need.check(case.approval_level, "the approval level of the pre-judgment disposal 批准层级")
    submitted = last_event(e, type=EventType.TRANSITION, to_state="submitted")
    need.check(submitted, "the bureau approver's sign-off of the entrustment 委托审批（提交）记录")
    rows = holding_rows(e)
    need.check(rows, "the holdings entrusted, with addresses and declared amounts 涉案财物清单")
    need.raise_if_missing()
    totals = asset_totals(rows)
    ctx.update(
        holdings=rows, totals=totals, submitted_at=when(submitted.created_at),
        submitted_by=person(submitted.actor),
        basis_zh=LEGAL_BASIS_ZH.get(case.legal_basis, case.legal_basis),
        basis_en=en(_basis_cls(), case.legal_basis),
        approval_level_zh=APPROVAL_LEVEL_ZH.get(case.approval_level, ""),
        inventory=_holdings_listing(rows, with_location=True),
        parties=[party("委托方", "Entrusting bureau", e.bureau, f"办案单位 · 扣押决定书 {case.seizure_decision_no}"),
                 party("受托方", "Entrusted exchange", e.bce)],
        signatures=[signer("委托方", "Entrusting bureau", e.bureau)],
    )
    facts = {
        "案件名称": case.title,
        "处置依据": basis_text(case),
        "扣押决定书": case.seizure_decision_no,
        "涉案财物": "；".join(f"{t['asset'].symbol} {t['amount']}（{t['count']} 个地址）" for t in totals),
        "委托时间": ctx["submitted_at"],
    }
    if case.legal_basis == "pre_judgment":
        facts["先行处置"] = f"所有人已同意；{ctx['approval_level_zh']}批准"
    ctx["facts"].update(facts)


def _basis_cls():
    from cases.models import LegalBasisKind

    return LegalBasisKind


def _appointment(ctx, e, need: Needs):
    appointment = (Appointment.objects.filter(entrustment=e, is_current=True)
                   .select_related("agency", "appointed_by").first())
    need.check(appointment, "BCE's appointment of the service agency 服务机构确认记录")
    if appointment:
        need.check(appointment.qualification_note.strip(), "the agency's qualification 资质")
        need.check(appointment.capacity_note.strip(), "the agency's capacity 能力")
        need.check(appointment.conflicts_declared.strip(), "the agency's declaration of conflicts 利益冲突声明")
        need.check(appointment.valuation_source.strip(), "the source of the valuation 估值来源")
    need.raise_if_missing()
    a = appointment
    ctx.update(
        appointment=a, valuation=cny(a.valuation_cny), valuation_caps=cny_caps(a.valuation_cny),
        appointed_at=when(a.appointed_at), appointed_by=person(a.appointed_by),
        bond_ratio=pct(e.policy.bond_ratio),
        parties=[party("确认方", "Appointing exchange", e.bce),
                 party("服务机构", "Service agency", a.agency, a.agency.licence_ref),
                 party("委托方", "Entrusting bureau", e.bureau)],
        signatures=[signer("确认方", "Appointing exchange", e.bce), signer("服务机构", "Service agency", a.agency)],
    )
    ctx["facts"].update({
        "服务机构": a.agency.name,
        "资质": a.qualification_note,
        "能力": a.capacity_note,
        "利益冲突声明": a.conflicts_declared,
        "估值": cny_both(a.valuation_cny),
        "估值来源": a.valuation_source,
        "确认时间": ctx["appointed_at"],
    })


def _bond_certificate(ctx, e, need: Needs):
    bond = e.current_bond()
    need.check(bond, "the performance bond posted by the agency 履约保证金记录")
    need.raise_if_missing()
    a = bond.appointment
    ctx.update(
        bond=bond, appointment=a, ratio=pct(bond.ratio),
        required=cny(bond.required_cny), required_caps=cny_caps(bond.required_cny),
        posted=cny(bond.posted_cny), posted_caps=cny_caps(bond.posted_cny),
        valuation=cny(a.valuation_cny), valuation_caps=cny_caps(a.valuation_cny),
        posted_at=when(bond.posted_at), bond_state_zh=BOND_STATE_ZH.get(bond.state, bond.state),
        covers=bond.posted_cny >= bond.required_cny,
        parties=[party("收取方", "Received by", e.bce), party("缴纳方（服务机构）", "Posted by (agency)", a.agency),
                 party("委托方", "Entrusting bureau", e.bureau)],
        signatures=[signer("收取方", "Received by", e.bce)],
    )
    ctx["facts"].update({
        "服务机构": a.agency.name,
        "保证金凭证号": bond.reference,
        "缴纳比例": ctx["ratio"],
        "估值": cny(a.valuation_cny),
        "应缴金额": cny_both(bond.required_cny),
        "实缴金额": cny_both(bond.posted_cny),
        "缴纳时间": ctx["posted_at"],
        "状态": ctx["bond_state_zh"],
    })


def _detection_report(ctx, e, need: Needs):
    rows = holding_rows(e)
    need.check(rows, "the holdings to detect 涉案财物")
    latest: dict[int, Detection] = {}
    for d in (Detection.objects.filter(holding__entrustment=e).select_related("witness")
              .order_by("holding_id", "-recorded_at", "-id")):
        latest.setdefault(d.holding_id, d)
    witnesses = {d.witness for d in latest.values() if d.witness is not None}
    for r in rows:
        d = latest.get(r["holding"].pk)
        if d is None:
            need.add(f"the on-chain detection of {r['holding'].asset.symbol} address {r['holding'].address} "
                     f"链上检测结果")
        elif d.witness is None:
            need.add(f"the technical witness of the detection of {r['holding'].address} 技术见证单位")
    need.raise_if_missing()
    detected = []
    for r in rows:
        h, d = r["holding"], latest[r["holding"].pk]
        detected.append({**r, "detection": d, "observed": coins(h.asset, d.observed_amount),
                         "controlled": "是" if d.controlled else "否", "matches": d.matches,
                         "result": "一致" if d.matches else "不一致",
                         "difference": coins(h.asset, d.observed_amount - h.declared_amount)})
    mismatched = [x for x in detected if not x["matches"]]
    long_list = None
    if len(detected) > TABLE_ROWS_MAX:
        long_list = listing(
            [("#", True), ("币种", False), ("地址 Address", False), ("申报 Declared", True), ("检测 Observed", True),
             ("区块 Block", True), ("控制", False), ("结论", False), ("见证 Witness", False)],
            [(str(n), x["asset"].symbol, x["address"], x["asset"].format_amount(x["holding"].declared_amount),
              x["asset"].format_amount(x["detection"].observed_amount), str(x["detection"].block_height),
              x["controlled"], x["result"], x["detection"].witness.name) for n, x in enumerate(detected, 1)])
    accepted = last_event(e, type=EventType.TRANSITION, details__transition="accept_detected_amounts")
    recordings = list(EvidenceFile.objects.filter(entrustment=e, kind__in=[EvidenceKind.RECORDING,
                                                                            EvidenceKind.DETECTION])
                      .order_by("uploaded_at", "id"))
    heights = [x["detection"].block_height for x in detected]
    detected_at = max(x["detection"].recorded_at for x in detected)
    totals = []
    by_asset: dict = {}
    for x in detected:
        h = x["holding"]
        t = by_asset.setdefault(h.asset_id, {"asset": h.asset, "declared": 0, "observed": 0})
        t["declared"] += h.declared_amount
        t["observed"] += x["detection"].observed_amount
    for t in by_asset.values():
        totals.append({**t, "declared_text": coins(t["asset"], t["declared"]),
                       "observed_text": coins(t["asset"], t["observed"])})
    witness_names = "、".join(sorted(w.name for w in witnesses))
    ctx.update(
        detections=detected, long_list=long_list, mismatched=mismatched, totals=totals, recordings=recordings,
        acceptance=accepted, acceptance_at=when(accepted.created_at) if accepted else "",
        detected_at=when(detected_at), witnesses=sorted(witnesses, key=lambda w: w.name),
        parties=[party("检测方（服务机构）", "Detected by (agency)", e.agency)]
        + [party("技术见证", "Technical witness", w) for w in sorted(witnesses, key=lambda w: w.name)]
        + [party("委托方", "Entrusting bureau", e.bureau), party("受托方", "Entrusted exchange", e.bce)],
        signatures=[signer("检测方", "Detected by", e.agency)]
        + [signer("技术见证", "Technical witness", w) for w in sorted(witnesses, key=lambda w: w.name)],
    )
    ctx["facts"].update({
        "检测地址数": str(len(detected)),
        "检测结论": ("全部一致" if not mismatched else f"{len(mismatched)} 个地址不一致") + f"（{len(detected)} 个地址）",
        **{f"申报/检测 {t['asset'].symbol}": f"{t['declared_text']} / {t['observed_text']}" for t in totals},
        "区块高度": f"{min(heights)}" if min(heights) == max(heights) else f"{min(heights)}–{max(heights)}",
        "技术见证单位": witness_names,
        "检测时间": ctx["detected_at"],
    })
    if accepted:
        ctx["facts"]["差异认可"] = f"{ctx['acceptance_at']}：{accepted.reason}"


def _handover_record(ctx, e, need: Needs):
    rows = holding_rows(e)
    need.check(rows, "the holdings handed over 涉案财物")
    transfers = list(CoinTransfer.objects.filter(entrustment=e, kind=TransferKind.TO_CUSTODY,
                                                 status=TransferStatus.CONFIRMED)
                     .select_related("asset", "holding").order_by("asset__symbol", "holding_id", "id"))
    by_holding = defaultdict(list)
    for t in transfers:
        by_holding[t.holding_id].append(t)
        need.check(t.txid.strip(), f"the transaction id of transfer {t.reference} 交易哈希")
    for r in rows:
        if not by_holding.get(r["holding"].pk):
            need.add(f"the confirmed transfer into custody of {r['holding'].asset.symbol} address "
                     f"{r['holding'].address} 交接转账记录")
    need.raise_if_missing()
    witnesses = sorted({d.witness for d in Detection.objects.filter(holding__entrustment=e, witness__isnull=False)
                        .select_related("witness")}, key=lambda w: w.name)
    items, totals = [], {}
    for t in transfers:
        items.append({"transfer": t, "amount": coins(t.asset, t.amount), "fee": coins(t.asset, t.network_fee),
                      "recorded_at": when(t.recorded_at)})
        line = totals.setdefault(t.asset_id, {"asset": t.asset, "amount": 0, "fee": 0, "count": 0})
        line["amount"] += t.amount
        line["fee"] += t.network_fee
        line["count"] += 1
    total_rows = [{**v, "amount_text": coins(v["asset"], v["amount"]), "fee_text": coins(v["asset"], v["fee"])}
                  for v in totals.values()]
    long_list = None
    if len(items) > TABLE_ROWS_MAX:
        long_list = listing(
            [("#", True), ("币种", False), ("转出地址 From", False), ("转入地址 To", False), ("数量 Amount", True),
             ("网络费 Fee", True), ("交易哈希 Txid", False)],
            [(str(n), t.asset.symbol, t.from_address, t.to_address, t.asset.format_amount(t.amount),
              t.asset.format_amount(t.network_fee), t.txid) for n, t in enumerate(transfers, 1)])
    ctx.update(
        transfers=items, long_list=long_list, totals=total_rows, custodian=e.case.custodian,
        handed_over_at=when(max(t.recorded_at for t in transfers)),
        parties=[party("移交方", "Handed over by", e.bureau, f"保管部门：{e.case.custodian}"),
                 party("接收方（服务机构）", "Received by (agency)", e.agency)]
        + [party("技术见证", "Technical witness", w) for w in witnesses],
        signatures=[signer("移交方", "Handed over by", e.bureau), signer("接收方", "Received by", e.agency)]
        + [signer("技术见证", "Technical witness", w) for w in witnesses],
    )
    facts = {"交接笔数": str(len(items))}
    for v in total_rows:
        facts[f"交接数量 {v['asset'].symbol}"] = f"{v['amount_text']}（网络费 {v['fee_text']}）"
    txids = [t.txid for t in transfers]
    facts["交易哈希"] = "；".join(txids) if len(txids) <= 5 else f"{len(txids)} 笔，见清单"
    facts["交接时间"] = ctx["handed_over_at"]
    ctx["facts"].update(facts)


def _reserve_determination(ctx, e, need: Needs, lot: Lot):
    reserves = list(ReservePrice.objects.filter(lot=lot).select_related("proposed_by").order_by("round_no"))
    approved = [r for r in reserves if r.approved_at]
    need.check(approved, f"an approved reserve price for lot {lot.sequence} 已批准的保留价")
    if approved:
        need.check(str((approved[-1].inputs or {}).get("source") or "").strip(),
                   "the source of the reference prices 参考价格来源")
    need.raise_if_missing()
    reserve = approved[-1]
    policy = e.policy
    inputs = dict(reserve.inputs or {})
    input_rows = []
    refs = inputs.pop("reference_prices", None)
    if refs:
        input_rows.append(("参考价格 Reference prices", "、".join(num(Decimal(str(p))) for p in refs)))
        average = sum(Decimal(str(p)) for p in refs) / len(refs)
        input_rows.append(("参考均价 Average", f"{reserve.currency} {num(average.quantize(Decimal('0.00000001')))}"
                           f"（{len(refs)} 个交易日）"))
    source = inputs.pop("source", "")
    input_rows.append(("价格来源 Source", source))
    window = inputs.pop("window", "") or _window_text(inputs)
    if not window and reserve.rule == ReserveRule.REFERENCE_AVERAGE:
        window = f"交易日前 {policy.reference_days} 个交易日（依规则；未记录具体起止日期）"
    if window:
        input_rows.append(("取价时间窗口 Window", str(window)))
    for key, label in (("valuation_price", "估值价格 Valuation price"), ("face_value", "面值 Face value")):
        if key in inputs:
            input_rows.append((label, f"{reserve.currency} {num(Decimal(str(inputs.pop(key))))}"))
    for key, value in inputs.items():  # anything else recorded as evidence is printed as recorded
        input_rows.append((str(key), value if isinstance(value, str) else str(value)))
    value = (Decimal(lot.quantity) / lot.asset.unit * reserve.price).quantize(Decimal("0.01"))
    ctx.update(
        lot=lot, lot_label=lot_label(lot), reserve=reserve, reserves=reserves,
        price=f"{reserve.currency} {num(reserve.price)}", rule_zh=reserve_rule_zh(reserve.rule, policy),
        rule_en=en(ReserveRule, reserve.rule), input_rows=input_rows, lot_value=money(value, reserve.currency),
        proposed_at=when(reserve.proposed_at), approved_at=when(reserve.approved_at),
        proposed_by=person(reserve.proposed_by), max_cut=pct(policy.max_reserve_cut),
        history=[{"r": r, "price": f"{r.currency} {num(r.price)}", "approved_at": when(r.approved_at) or "未批准"}
                 for r in reserves],
        parties=[party("确定方", "Determined by", e.bce), party("委托方", "Entrusting bureau", e.bureau),
                 party("服务机构", "Service agency", e.agency)],
        signatures=[signer("确定方", "Determined by", e.bce)],
    )
    ctx["facts"].update({
        "批次": ctx["lot_label"],
        "轮次": f"第 {reserve.round_no} 轮",
        "保留价（每单位）": ctx["price"],
        "保留价总额": ctx["lot_value"],
        "定价规则": ctx["rule_zh"],
        "价格来源": source,
        "批准时间": ctx["approved_at"],
    })


def _window_text(inputs: dict) -> str:
    start, end = inputs.pop("window_start", ""), inputs.pop("window_end", "")
    return f"{start} 至 {end}" if start or end else ""


def _award_approved(e, quote) -> bool:
    return Event.objects.filter(entrustment=e, type=EventType.LOT_TRANSITION, details__transition="approve_award",
                                details__quote=quote.pk).exists()


def _inquiry_record(ctx, e, need: Needs, lot: Lot):
    rounds = list(InquiryRound.objects.filter(lot=lot).select_related("reserve", "awarded_quote__platform")
                  .prefetch_related("quotes__platform").order_by("number"))
    need.check(rounds, f"an inquiry round on lot {lot.sequence} 询价轮次")
    for rnd in rounds:
        if rnd.closed_at is None:
            need.add(f"the outcome of inquiry round {rnd.number} of lot {lot.sequence} (the round is still open) "
                     f"询价结果")
    need.raise_if_missing()
    policy = e.policy
    out = []
    for rnd in rounds:
        quotes = sorted(rnd.quotes.all(), key=lambda q: (-q.price, q.quoted_at, q.pk))
        best = quotes[0] if quotes else None
        reserve = rnd.reserve.price
        if rnd.awarded_quote:
            q = rnd.awarded_quote
            approved = _award_approved(e, q)
            outcome = (f"最优报价 {q.platform.name} {q.reference} {rnd.reserve.currency} {num(q.price)} "
                       f"≥ 保留价，{'已批准成交' if approved else '拟成交，待北交所审批'}")
        elif len(quotes) < policy.min_quotes:
            outcome = f"未成交：报价 {len(quotes)} 个，少于规定的 {policy.min_quotes} 个"
        else:
            outcome = "未成交：无报价达到保留价"
        out.append({
            "round": rnd, "currency": rnd.reserve.currency, "reserve": f"{rnd.reserve.currency} {num(reserve)}",
            "opened_at": when(rnd.opened_at),
            "closed_at": when(rnd.closed_at), "outcome": outcome, "best": best,
            "quotes": [{"q": q, "price": f"{rnd.reserve.currency} {num(q.price)}",
                        "quantity": coins(lot.asset, q.quantity), "quoted_at": when(q.quoted_at),
                        "expires_at": when(q.expires_at), "above": q.price >= reserve, "is_best": q is best,
                        "awarded": rnd.awarded_quote_id == q.pk}
                       for q in quotes],
        })
    last = out[-1]
    best = last["best"]
    ctx.update(
        lot=lot, lot_label=lot_label(lot), rounds=out, min_quotes=policy.min_quotes,
        lot_state_zh=LOT_STATE_ZH.get(lot.state, lot.state),
        parties=[party("询价方（服务机构）", "Inquiry by (agency)", e.agency),
                 party("审批方", "Award approved by", e.bce), party("委托方", "Entrusting bureau", e.bureau)],
        signatures=[signer("询价方", "Inquiry by", e.agency)],
    )
    ctx["facts"].update({
        "批次": ctx["lot_label"],
        "询价轮次": f"{len(out)} 轮",
        "本轮报价数": f"{len(last['quotes'])} 个",
        "保留价": last["reserve"],
        "最优报价": (f"{best.platform.name} {best.reference} {last['currency']} {num(best.price)}"
                 if best else "无报价"),
        "询价结果": last["outcome"],
    })


def _sale_confirmation(ctx, e, need: Needs, lot: Lot):
    fills = list(Fill.objects.filter(lot=lot).select_related("quote__platform", "quote__round")
                 .order_by("executed_at", "id"))
    need.check(fills, f"the executed trades (fills) of lot {lot.sequence} 成交明细")
    need.raise_if_missing()
    currency = fills[0].currency
    currencies = {f.currency for f in fills}
    items = [{"f": f, "quantity": coins(lot.asset, f.quantity), "price": f"{f.currency} {num(f.price)}",
              "gross": money(f.gross, f.currency), "fee": money(f.fee, f.currency),
              "net": money(f.net, f.currency), "executed_at": when(f.executed_at)} for f in fills]
    totals = []
    for cur in sorted(currencies):
        fs = [f for f in fills if f.currency == cur]
        gross, fee = sum(f.gross for f in fs), sum(f.fee for f in fs)
        totals.append({"currency": cur, "quantity": coins(lot.asset, sum(f.quantity for f in fs)),
                       "gross": money(gross, cur), "fee": money(fee, cur), "net": money(gross - fee, cur)})
    quantity = sum(f.quantity for f in fills)
    platforms = sorted({f.quote.platform.name for f in fills})
    remainders = list(lot.remainders.all())
    reserve = lot.current_reserve()
    ctx.update(
        lot=lot, lot_label=lot_label(lot), fills=items, totals=totals, platforms="、".join(platforms),
        remainders=[{"lot": r, "label": lot_label(r)} for r in remainders],
        reserve=f"{reserve.currency} {num(reserve.price)}" if reserve else "",
        filled=coins(lot.asset, quantity), lot_state_zh=LOT_STATE_ZH.get(lot.state, lot.state),
        parties=[party("卖方代理（服务机构）", "Seller's agent (agency)", e.agency),
                 party("交易平台", "Platform", fills[0].quote.platform, fills[0].quote.platform.licence_ref),
                 party("审批方", "Award approved by", e.bce)],
        signatures=[signer("服务机构", "Service agency", e.agency)],
    )
    facts = {
        "批次": ctx["lot_label"],
        "成交平台": ctx["platforms"],
        "成交编号": "；".join(f.trade_id for f in fills) if len(fills) <= 5 else f"{len(fills)} 笔，见明细",
        "成交数量": ctx["filled"],
    }
    for t in totals:
        suffix = "" if len(totals) == 1 else f" {t['currency']}"
        facts[f"成交总额{suffix}"] = t["gross"]
        facts[f"平台费用{suffix}"] = t["fee"]
        facts[f"净额{suffix}"] = t["net"]
    if remainders:
        facts["未成交余量"] = "；".join(r["label"] for r in ctx["remainders"])
    facts["成交时间"] = when(fills[-1].executed_at)
    ctx["facts"].update(facts)
    ctx["currency"] = currency


def _fx_application(ctx, e, need: Needs):
    from settlements.models import FxOutcome

    receipts = list(e.offshore_receipts.select_related("bank").order_by("currency", "value_date", "id"))
    need.check(receipts, "the offshore receipt (bank credit advice) of the sale proceeds 境外收款水单")
    received = {r.currency for r in receipts}
    for currency in sorted(set(net_proceeds_by_currency(e)) - received):
        need.add(f"the offshore receipt of the {currency} proceeds 境外收款")
    need.raise_if_missing()
    conversions = list(e.fx_conversions.order_by("recorded_at", "id"))
    approved = {c.currency: c for c in conversions if c.outcome == FxOutcome.APPROVED}
    rejected = [c for c in conversions if c.outcome == FxOutcome.REJECTED]
    lines = []
    for cur in sorted(received):
        rs = [r for r in receipts if r.currency == cur]
        c = approved.get(cur)
        lines.append({
            "currency": cur, "receipts": [{"r": r, "amount": money(r.amount, cur), "value_date": day(r.value_date)}
                                          for r in rs],
            "total": money(sum(r.amount for r in rs), cur), "conversion": c,
            "rate": f"{c.rate:f}" if c else "", "cny": cny(c.amount_cny) if c else "",
            "cny_caps": cny_caps(c.amount_cny) if c else "",
        })
    total_cny = sum((c.amount_cny for c in approved.values()), Decimal("0.00"))
    all_converted = bool(approved) and set(approved) >= received
    ctx.update(
        lines=lines, rejected=rejected, all_converted=all_converted,
        total_cny=cny(total_cny), total_cny_caps=cny_caps(total_cny),
        parties=[party("申请人（服务机构）", "Applicant (agency)", e.agency),
                 party("收款银行", "Receiving bank", receipts[0].bank),
                 party("资金归属（委托方）", "Funds belong to (bureau)", e.bureau,
                       f"涉案款专用账户 {e.bureau.special_account_no}" if e.bureau.special_account_no else "")],
        signatures=[signer("申请人", "Applicant", e.agency)],
    )
    facts = {}
    for line in lines:
        refs = "、".join(f"{x['r'].bank_reference}（起息日 {x['value_date']}）" for x in line["receipts"])
        facts[f"境外收款 {line['currency']}"] = f"{line['total']}；{refs}"
        c = line["conversion"]
        if c:
            facts[f"外汇审批 {line['currency']}"] = f"审批 {c.approval_reference}；国际收支申报 {c.bop_declaration_no}"
            facts[f"结汇 {line['currency']}"] = f"汇率 {line['rate']}；{line['cny']}；水单 {c.slip_reference}"
        else:
            facts[f"结汇 {line['currency']}"] = "待外汇管理审批（申请中）"
    if approved:
        facts["结汇人民币合计"] = cny_both(total_cny)
    ctx["facts"].update(facts)


def _credit_notice(ctx, e, need: Needs):
    from settlements.models import FxOutcome

    credit = getattr(e, "credit", None) if _has(e, "credit") else None
    need.check(credit, "the credit slip into the special case-funds account 专户入账记录")
    if credit:
        need.check(credit.account_no, "the special case-funds account number 专户账号")
        need.check(credit.slip_reference, "the credit slip reference 入账凭证号")
    need.raise_if_missing()
    conversions = list(e.fx_conversions.filter(outcome=FxOutcome.APPROVED).order_by("currency"))
    ctx.update(
        credit=credit, amount=cny(credit.amount_cny), amount_caps=cny_caps(credit.amount_cny),
        credited_at=when(credit.recorded_at), recorded_by=person(credit.recorded_by),
        conversions=[{"c": c, "foreign": money(c.amount_foreign, c.currency), "cny": cny(c.amount_cny),
                      "rate": f"{c.rate:f}"} for c in conversions],
        parties=[party("账户单位", "Account holder", e.bureau, f"涉案款专用账户 {credit.account_no}"),
                 party("资金来源（服务机构）", "Funds from (agency)", e.agency)],
        signatures=[signer("账户单位", "Account holder", e.bureau)],
    )
    ctx["facts"].update({
        "专户账号": credit.account_no,
        "入账金额": cny(credit.amount_cny),
        "金额大写": cny_caps(credit.amount_cny),
        "入账凭证号": credit.slip_reference,
        "入账时间": ctx["credited_at"],
    })


def _has(obj, name) -> bool:
    from django.core.exceptions import ObjectDoesNotExist

    try:
        getattr(obj, name)
        return True
    except ObjectDoesNotExist:
        return False


def treasury_payee(entrustment) -> tuple[str, str]:
    """The remittance model records no payee: it is the treasury, collected through the finance
    bureau of the bureau's jurisdiction when one is on record."""
    finance = (Organisation.objects.filter(kind=OrgKind.FINANCE, jurisdiction_id=entrustment.bureau.jurisdiction_id,
                                           is_active=True).order_by("code").first()
               if entrustment.bureau.jurisdiction_id else None)
    if finance:
        return f"国库（{finance.name}非税收入收缴）", f"State Treasury, collected by {finance.name_en or finance.name}"
    return "国库（财政非税收入收缴）", "State Treasury (non-tax revenue collection)"


def _treasury_remittance(ctx, e, need: Needs):
    remittance = e.remittance if _has(e, "remittance") else None
    need.check(remittance, "the remittance to the treasury (payment form) 缴款记录")
    if remittance:
        need.check(remittance.payment_code, "the 20-digit payment code 缴款码")
        need.check(remittance.remitted_at, "the time the remittance was made (approved and paid) 缴库时间")
        need.check(remittance.treasury_receipt.strip(), "the treasury receipt 国库回执")
    need.raise_if_missing()
    r = remittance
    payee_zh, payee_en = treasury_payee(e)
    code = r.payment_code
    ctx.update(
        remittance=r, payment_code=code, payment_code_grouped=" ".join(code[i:i + 4] for i in range(0, len(code), 4)),
        amount=cny(r.amount_cny), amount_caps=cny_caps(r.amount_cny), remitted_at=when(r.remitted_at),
        prepared_at=when(r.prepared_at), payee_zh=payee_zh, payee_en=payee_en,
        payer_account=e.bureau.special_account_no,
        parties=[party("缴款人", "Payer", e.bureau,
                       f"涉案款专用账户 {e.bureau.special_account_no}" if e.bureau.special_account_no else ""),
                 {"role_zh": "收款人", "role_en": "Payee", "name": payee_zh, "name_en": payee_en, "detail": ""}],
        signatures=[signer("缴款人", "Payer", e.bureau)],
    )
    ctx["facts"].update({
        "缴款码": code,
        "缴款金额": cny(r.amount_cny),
        "金额大写": cny_caps(r.amount_cny),
        "缴款人": e.bureau.name,
        "收款人": payee_zh,
        "收入项目": "罚没收入（涉案虚拟货币处置收入）",
        "国库回执": r.treasury_receipt,
        "缴库时间": ctx["remitted_at"],
    })


def _return_list(ctx, e, need: Needs):
    returns = list(e.victim_returns.filter(approved_at__isnull=False).select_related("prepared_by")
                   .order_by("approved_at", "id"))
    need.check(returns, "an approved return to victims 已批准的发还记录")
    need.raise_if_missing()
    total = sum((r.amount_cny for r in returns), Decimal("0.00"))
    pending = e.victim_returns.filter(approved_at__isnull=True).count()
    long_list = None
    if len(returns) > TABLE_ROWS_MAX:
        long_list = listing(
            [("#", True), ("收款人 Recipient", False), ("账户 Account", False), ("金额 Amount", True),
             ("依据 Basis", False), ("批准时间", False)],
            [(str(n), r.recipient, r.recipient_account, cny(r.amount_cny), r.basis, when(r.approved_at))
             for n, r in enumerate(returns, 1)])
    ctx.update(
        returns=[{"r": r, "amount": cny(r.amount_cny), "amount_caps": cny_caps(r.amount_cny),
                  "approved_at": when(r.approved_at)} for r in returns],
        total=cny(total), total_caps=cny_caps(total), pending=pending, long_list=long_list,
        parties=[party("发还单位", "Returned by", e.bureau,
                       f"涉案款专用账户 {e.bureau.special_account_no}" if e.bureau.special_account_no else "")],
        signatures=[signer("发还单位", "Returned by", e.bureau)],
    )
    ctx["facts"].update({
        "发还笔数": str(len(returns)),
        "发还总额": cny(total),
        "金额大写": cny_caps(total),
        "批准时间": when(returns[-1].approved_at),
    })


TIMELINE_COLLAPSE = {EventType.HOLDING_REGISTERED}


APPROVAL_ACTION_ZH = {
    "submit": "委托审批", "accept": "受理审批", "reserve": "保留价审批", "award": "成交审批",
    "remittance": "缴库审批", "victim_return": "发还审批", "close": "结案审批",
    "fx": "结汇申请", "bond_release": "保证金退还", "bond_forfeit": "保证金没收", "whitelist": "地址白名单",
}
TRANSFER_KIND_ZH = {"to_custody": "扣押地址 → 服务机构托管", "to_platform": "托管 → 境外平台"}


def _event_summary(ev) -> str:
    """One line saying what the event recorded, in words (its full details stay in the record)."""
    d = ev.details or {}
    t = EventType
    if ev.type == t.TRANSITION:
        text = f"{ENTRUSTMENT_STATE_ZH.get(ev.from_state, ev.from_state)} → " \
               f"{ENTRUSTMENT_STATE_ZH.get(ev.to_state, ev.to_state)}"
    elif ev.type == t.LOT_TRANSITION:
        lot = d.get("lot")
        states = (f"{LOT_STATE_ZH.get(ev.from_state, ev.from_state)} → {LOT_STATE_ZH.get(ev.to_state, ev.to_state)}"
                  if ev.from_state else LOT_STATE_ZH.get(ev.to_state, ev.to_state))
        text = (f"L{lot} " if lot else "") + states
        if d.get("planned"):
            text = "批次规划：" + "；".join(f"L{p[0]} {p[1]}" for p in d["planned"] if len(p) >= 2)
    elif ev.type == t.SETTLEMENT_RECORDED:
        step = d.get("step", "")
        extras = [str(d[k]) for k in ("currency", "amount", "foreign", "rate", "amount_cny", "cny", "recipient",
                                      "payment_code", "bank_reference", "approval", "bop") if d.get(k)]
        text = " ".join([SETTLEMENT_STEP_ZH.get(step, step), *extras])
    elif ev.type == t.APPROVAL_GIVEN:
        text = f"{APPROVAL_ACTION_ZH.get(d.get('action'), d.get('action', ''))} {d.get('subject', '')}"
    elif ev.type == t.QUOTE_RECORDED:
        text = f"L{d.get('lot')} {d.get('platform', '')} 报价 {d.get('reference', '')} 价格 {d.get('price', '')}"
    elif ev.type == t.FILL_RECORDED:
        trades = [str(f[0]) for f in d.get("fills", []) if f]
        text = f"L{d.get('lot')} 成交 {len(trades)} 笔 {'、'.join(trades[:5])}"
    elif ev.type == t.RESERVE_PROPOSED:
        text = f"L{d.get('lot')} 第 {d.get('round')} 轮 保留价 {d.get('price')}"
    elif ev.type in (t.BOND_POSTED, t.BOND_RELEASED, t.BOND_FORFEITED):
        text = " ".join(str(x) for x in (d.get("reference"), d.get("posted_cny") or d.get("amount_cny")) if x)
    elif ev.type == t.DETECTION_RECORDED:
        text = f"{d.get('count', '')} 个地址，不一致 {len(d.get('mismatches', []))} 个"
    elif ev.type == t.TRANSFER_RECORDED:
        count = d.get("count") or len(d.get("references", []))
        text = f"{TRANSFER_KIND_ZH.get(d.get('kind'), d.get('kind', ''))} {count} 笔"
    elif ev.type in ("document_issued", "document_refused"):
        try:
            title = TITLES[DocumentType(d.get("type"))][0]
        except ValueError:
            title = str(d.get("type", ""))
        text = " ".join(str(x) for x in (title, d.get("number"), f"v{d['version']}" if d.get("version") else "",
                                         d.get("subject")) if x)
    elif ev.type == t.CASE_REGISTERED:
        text = f"案件编号 {d.get('case_number', '')}"
    elif ev.type == t.LEGAL_BASIS_RECORDED:
        text = " ".join(str(x) for x in (LEGAL_BASIS_ZH.get(d.get("kind"), d.get("kind")), d.get("document_no"),
                                         d.get("authority")) if x)
    elif ev.type == t.ENTRUSTMENT_CREATED:
        text = f"涉案财物 {len(d.get('holdings', []))} 项"
    elif ev.type == t.AGENCY_APPOINTED:
        text = f"{d.get('agency', '')} 估值 CNY {d.get('valuation_cny', '')} 利益冲突声明：{d.get('conflicts_declared', '')}"
    else:
        scalars = [f"{k}={v}" for k, v in d.items() if isinstance(v, (str, int, float)) and k != "digest"]
        text = "；".join(scalars)
    return text if len(text) <= 160 else text[:157] + "…"


def timeline(e) -> list[dict]:
    """The business record: this entrustment's events and the case's own (registration, basis,
    holdings), one query. Runs of holding registrations are folded into one line."""
    events = (Event.objects.filter(Q(entrustment=e) | Q(case_id=e.case_id, entrustment__isnull=True))
              .select_related("actor", "actor_organisation").order_by("created_at", "id"))
    rows: list[dict] = []
    for ev in events:
        prev = rows[-1] if rows else None
        if prev and ev.type in TIMELINE_COLLAPSE and prev["type"] == ev.type:
            prev["count"] += 1
            prev["summary"] = f"{prev['count']} 项，至 {when(ev.created_at)}"
            continue
        rows.append({"time": when(ev.created_at), "type": ev.type,
                     "type_zh": EVENT_TYPE_ZH.get(ev.type, ev.get_type_display()),
                     "org": ev.actor_organisation.name if ev.actor_organisation else "系统",
                     "actor": person(ev.actor), "reason": ev.reason, "summary": _event_summary(ev), "count": 1})
    return rows


def _final_report(ctx, e, need: Needs):
    from cases.selectors import reconciliation

    if e.state != "closed":
        need.add(f"the close of the entrustment (it is “{ENTRUSTMENT_STATE_ZH.get(e.state, e.state)}” / "
                 f"{e.get_state_display()}, not closed) 结案归档")
    closed = last_event(e, type=EventType.TRANSITION, to_state="closed")
    if e.state == "closed":
        need.check(closed, "the record of the close 结案记录")
    need.raise_if_missing()
    recon = reconciliation(e)
    if recon.problems:
        need.add("reconciled amounts (" + " ".join(recon.problems) + ") 对账一致")
        need.raise_if_missing()
    assets = {line.asset.pk: line.asset for line in recon.coins}
    coin_rows = [{"asset": line.asset, "declared": line.asset.format_amount(line.declared),
                  "accepted": line.asset.format_amount(line.accepted), "sold": line.asset.format_amount(line.sold),
                  "fees": line.asset.format_amount(line.network_fees),
                  "held": line.asset.format_amount(line.still_held)}
                 for line in recon.coins]
    money_rows = [{"currency": m.currency, "net": money(m.net_proceeds, m.currency),
                   "fees": money(m.platform_fees, m.currency), "received": money(m.received_offshore, m.currency),
                   "converted": money(m.converted_foreign, m.currency)} for m in recon.money]
    cny_rows = [("结汇人民币 CNY converted", recon.converted_cny), ("入专户 Credited to special account",
                                                                   recon.credited_cny),
                ("上缴国库 Remitted to treasury", recon.remitted_cny), ("发还被害人 Returned to victims",
                                                                      recon.returned_cny)]
    # The inventory annex: one query for every holding, formatted without touching the ORM again.
    data = []
    holdings = (Holding.objects.filter(entrustment=e).order_by("asset__symbol", "id")
                .values_list("asset_id", "address", "declared_amount", "accepted_amount", "status"))
    for n, (asset_id, address, declared, accepted, status) in enumerate(holdings.iterator(chunk_size=5000), 1):
        asset = assets[asset_id]
        data.append((str(n), asset.symbol, address, asset.format_amount(declared), asset.format_amount(accepted),
                     HOLDING_STATUS_ZH.get(status, status)))
    inventory = listing([("序号", True), ("币种", False), ("地址 Address", False), ("申报数量 Declared", True),
                         ("接受数量 Accepted", True), ("状态 Status", False)], data)
    bond = e.current_bond()
    sla = ""
    if e.sla_started_at and e.sla_stopped_at:
        hours = (e.sla_stopped_at - e.sla_started_at).total_seconds() / 3600
        sla = f"{hours:.1f} 小时（规定 {e.policy.sla_hours} 小时）"
    events = timeline(e)
    ctx.update(
        recon=recon, coin_rows=coin_rows, money_rows=money_rows,
        cny_rows=[(label, cny(v), cny_caps(v)) for label, v in cny_rows], events=events, inventory=inventory,
        closed_at=when(closed.created_at), bond=bond, bond_state_zh=BOND_STATE_ZH.get(bond.state, "") if bond else "",
        sla=sla, platform=e.platform,
        lots=[{"sequence": lot.sequence, "symbol": lot.asset.symbol, "quantity": coins(lot.asset, lot.quantity),
               "state_zh": LOT_STATE_ZH.get(lot.state, lot.state), "failed_rounds": lot.failed_rounds,
               "parent": lot.parent.sequence if lot.parent else None}
              for lot in e.lots.select_related("asset", "parent").order_by("sequence")],
        parties=[party("报告单位", "Reported by", e.bce), party("委托方", "Entrusting bureau", e.bureau),
                 party("服务机构", "Service agency", e.agency),
                 party("交易平台", "Platform", e.platform) if e.platform else None],
        signatures=[signer("报告单位", "Reported by", e.bce), signer("委托方", "Entrusting bureau", e.bureau)],
    )
    ctx["parties"] = [p for p in ctx["parties"] if p]
    facts = {"状态": ctx["state_zh"], "结案时间": ctx["closed_at"], "涉案财物": f"{inventory['count']} 项"}
    for line in recon.coins:
        facts[f"处置 {line.asset.symbol}"] = (f"申报 {coins(line.asset, line.declared)}；出售 "
                                            f"{coins(line.asset, line.sold)}；网络费 "
                                            f"{coins(line.asset, line.network_fees)}；剩余 "
                                            f"{coins(line.asset, line.still_held)}")
    for m in recon.money:
        facts[f"净收入 {m.currency}"] = money(m.net_proceeds, m.currency)
    facts["结汇人民币"] = cny(recon.converted_cny)
    facts["入专户"] = cny(recon.credited_cny)
    facts["上缴国库"] = cny_both(recon.remitted_cny)
    facts["发还被害人"] = cny(recon.returned_cny)
    if sla:
        facts["处置用时"] = sla
    ctx["record_head"] = _record_head()
    facts["记录链头"] = f"#{ctx['record_head']['seq']} {ctx['record_head']['hash']}"
    facts["链头读取时间"] = ctx["record_head"]["read_at"]
    ctx["facts"].update(facts)


def _record_head() -> dict:
    """The record chain's head as this report is built: whoever holds the report can later run
    `manage.py verify_record --expect SEQ:HASH` to prove nothing recorded up to it has changed."""
    from audit.chain import head

    seq, digest = head()
    return {"seq": seq, "hash": digest, "read_at": when(timezone.now())}


BUILDERS = {
    D.AGREEMENT: _agreement,
    D.ENTRUSTMENT_LETTER: _entrustment_letter,
    D.APPOINTMENT: _appointment,
    D.BOND_CERTIFICATE: _bond_certificate,
    D.DETECTION_REPORT: _detection_report,
    D.HANDOVER_RECORD: _handover_record,
    D.FX_APPLICATION: _fx_application,
    D.CREDIT_NOTICE: _credit_notice,
    D.TREASURY_REMITTANCE: _treasury_remittance,
    D.RETURN_LIST: _return_list,
    D.FINAL_REPORT: _final_report,
}
LOT_BUILDERS = {
    D.RESERVE_DETERMINATION: _reserve_determination,
    D.INQUIRY_RECORD: _inquiry_record,
    D.SALE_CONFIRMATION: _sale_confirmation,
}


def build_context(doc_type: str, entrustment, subject: str = "") -> dict:
    """The template context of one document, or MissingFacts naming everything that is missing."""
    try:
        doc_type = DocumentType(doc_type)
    except ValueError:
        raise ValueError(f"Unknown document type: {doc_type!r}") from None
    need = Needs(doc_type)
    if doc_type in LOT_BUILDERS:
        lot = lot_from_subject(doc_type, entrustment, subject)
        ctx = common(doc_type, entrustment, subject)
        LOT_BUILDERS[doc_type](ctx, entrustment, need, lot)
    else:
        if subject:
            raise ValueError(f"{type_label(doc_type)} is issued per entrustment: no subject, not {subject!r}")
        ctx = common(doc_type, entrustment, subject)
        BUILDERS[doc_type](ctx, entrustment, need)
    ctx["facts"] = {str(k): str(v) for k, v in ctx["facts"].items()}
    return ctx
