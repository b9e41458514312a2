"""Official documents: the facts they certify, the refusals, and the PDFs themselves.

Every document type is rendered from a case driven through the whole lifecycle with the real
services, written to `test-artifacts/documents/<type>.pdf` (with a PNG of page 1), and read
back with poppler's `pdftotext -layout`: the document number, the case number and the key
amounts must be in the text. Refusals (`MissingFacts`) are checked at every step of the flow.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from cases.models import Fill, Holding, HoldingStatus, Quote
from documents.facts import MissingFacts, build_context, issuer_for
from documents.models import NUMBER_PREFIX, DocumentType
from documents.numerals import cny_capital
from documents.rendering import render_pdf
from settlements import services as money

from .flow import STEPS, Flow

pytestmark = pytest.mark.documents

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "documents"
LOT_TYPES = {DocumentType.RESERVE_DETERMINATION, DocumentType.INQUIRY_RECORD, DocumentType.SALE_CONFIRMATION}
ISSUED_AT = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.get_fixed_timezone(480))


def number_for(doc_type: str) -> str:
    return f"{NUMBER_PREFIX[doc_type]}-2026-{sorted(DocumentType.values).index(doc_type) + 1:06d}"


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def pdftotext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True).stdout.decode()


def page_count(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, check=True).stdout.decode()
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


def first_page_png(path: Path) -> Path:
    prefix = path.with_suffix("")
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", "-singlefile", str(path), str(prefix)],
                   check=True)
    return prefix.with_suffix(".png")


def subject_for(doc_type: str, entrustment) -> str:
    if doc_type in LOT_TYPES:
        return f"lot:{entrustment.lots.order_by('sequence').first().pk}"
    return ""


def render(doc_type: str, entrustment, *, name: str | None = None, subject: str | None = None):
    subject = subject_for(doc_type, entrustment) if subject is None else subject
    context = build_context(doc_type, entrustment, subject)
    number = number_for(doc_type)
    pdf = render_pdf(doc_type, context, number=number, version=1, issued_at=ISSUED_AT,
                     verify_url=f"http://127.0.0.1:8000/verify/test-{doc_type}-token")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name or doc_type}.pdf"
    path.write_bytes(pdf)
    return context, number, path


def closed_with_a_return(flow: Flow, recipient="张三", amount=Decimal("1000.00")):
    """The happy path to closed, with one approved return to a victim before the remittance."""
    w = flow.w
    entrustment = flow.to("credited")
    victim_return = money.victim_return_prepare(actor=w.shunyi_officer, entrustment=entrustment, recipient=recipient,
                                                recipient_account="6222 0200 0000 1234 567", amount_cny=amount,
                                                basis="（2025）京0113刑初100号刑事判决第二项")
    money.victim_return_approve(actor=w.shunyi_approver, victim_return=victim_return)
    return flow.to("closed")


def fmt(value: Decimal) -> str:
    return f"{value:,.2f}"


def expected_strings(doc_type: str, e) -> list[str]:
    """The key amounts and ids each document must print, read from the models independently."""
    holdings = list(Holding.objects.filter(entrustment=e).select_related("asset"))
    declared = [f"{h.asset.format_amount(h.declared_amount)} {h.asset.symbol}" for h in holdings]
    lot = e.lots.order_by("sequence").first()
    bond = e.current_bond()
    if doc_type == DocumentType.AGREEMENT:
        return declared + ["110%", f"{e.policy.sla_hours} 小时"]
    if doc_type == DocumentType.ENTRUSTMENT_LETTER:
        return declared + [h.address for h in holdings] + [e.case.basis_document_no, e.case.basis_authority]
    if doc_type == DocumentType.APPOINTMENT:
        valuation = bond.appointment.valuation_cny
        return [f"CNY {fmt(valuation)}", cny_capital(valuation), e.agency.name]
    if doc_type == DocumentType.BOND_CERTIFICATE:
        return [bond.reference, f"CNY {fmt(bond.required_cny)}", f"CNY {fmt(bond.posted_cny)}",
                cny_capital(bond.required_cny), cny_capital(bond.posted_cny), "110%"]
    if doc_type == DocumentType.DETECTION_REPORT:
        return declared + ["900000", e.agency.name, "公安部第一研究所"]
    if doc_type == DocumentType.HANDOVER_RECORD:
        transfers = e.transfers.filter(kind="to_custody").select_related("asset")
        return [f"{t.asset.format_amount(t.amount)} {t.asset.symbol}" for t in transfers] + [t.txid for t in transfers]
    if doc_type == DocumentType.RESERVE_DETERMINATION:
        reserve = lot.current_reserve()
        return [f"USD {fmt(reserve.price)}", f"{lot.asset.format_amount(lot.quantity)} {lot.asset.symbol}",
                "Bitstamp daily close"]
    if doc_type == DocumentType.INQUIRY_RECORD:
        quotes = Quote.objects.filter(round__lot=lot)
        return [q.reference for q in quotes] + [f"USD {fmt(q.price)}" for q in quotes]
    if doc_type == DocumentType.SALE_CONFIRMATION:
        fills = Fill.objects.filter(lot=lot)
        return ([f.trade_id for f in fills] + [f"USD {fmt(f.gross)}" for f in fills]
                + [f"USD {fmt(f.fee)}" for f in fills] + [f"USD {fmt(f.gross - f.fee)}" for f in fills])
    if doc_type == DocumentType.FX_APPLICATION:
        out = []
        for r in e.offshore_receipts.all():
            out += [f"{r.currency} {fmt(r.amount)}", r.bank_reference]
        for c in e.fx_conversions.all():
            out += [c.approval_reference, c.bop_declaration_no, f"{c.rate:f}", f"CNY {fmt(c.amount_cny)}"]
        return out
    if doc_type == DocumentType.CREDIT_NOTICE:
        return [e.credit.account_no, f"CNY {fmt(e.credit.amount_cny)}", cny_capital(e.credit.amount_cny),
                e.credit.slip_reference]
    if doc_type == DocumentType.TREASURY_REMITTANCE:
        r = e.remittance
        return [r.payment_code, f"CNY {fmt(r.amount_cny)}", cny_capital(r.amount_cny), r.treasury_receipt,
                "非税收入一般缴款书", e.bureau.name]
    if doc_type == DocumentType.RETURN_LIST:
        returns = e.victim_returns.all()
        return ([v.recipient for v in returns] + [f"CNY {fmt(v.amount_cny)}" for v in returns]
                + [cny_capital(sum(v.amount_cny for v in returns))])
    if doc_type == DocumentType.FINAL_REPORT:
        return ([f"CNY {fmt(e.remittance.amount_cny)}", cny_capital(e.remittance.amount_cny),
                 f"CNY {fmt(e.credit.amount_cny)}"] + [h.address for h in holdings] + declared)
    raise AssertionError(doc_type)


# --------------------------------------------------------------------------- every type, rendered and read back


def test_every_document_type_renders_with_its_number_case_and_amounts(flow, capsys):
    entrustment = closed_with_a_return(flow)
    case_number = entrustment.case.case_number
    failures, timings = [], {}
    for doc_type in DocumentType.values:
        context, number, path = render(doc_type, entrustment)
        assert context["facts"]["案件编号"] == case_number
        assert context["facts"]["委托编号"] == entrustment.number
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in context["facts"].items()), doc_type
        assert context["issuer"] == issuer_for(doc_type, entrustment)
        text = squash(pdftotext(path))
        for needle in [number, case_number, entrustment.number, *expected_strings(doc_type, entrustment)]:
            if squash(needle) not in text:
                failures.append(f"{doc_type}: {needle!r} not in the PDF text")
        for value in context["facts"].values():  # the printed facts are what the verify page shows
            if squash(value) not in text:
                failures.append(f"{doc_type}: printed fact {value!r} not in the PDF text")
        png = first_page_png(path)
        assert png.exists() and png.stat().st_size > 1000
        # Warm timing: build the context and render again (fonts and stylesheet are cached now).
        started = time.perf_counter()
        context = build_context(doc_type, entrustment, subject_for(doc_type, entrustment))
        render_pdf(doc_type, context, number=number, version=1, issued_at=ISSUED_AT,
                   verify_url=f"http://127.0.0.1:8000/verify/test-{doc_type}-token")
        timings[doc_type] = time.perf_counter() - started
    with capsys.disabled():
        print("\nwarm build_context + render_pdf per type:")
        for doc_type, seconds in timings.items():
            print(f"  {doc_type:24s} {seconds * 1000:7.0f} ms")
    assert not failures, "\n".join(failures)


def test_page_furniture_is_on_every_page(flow):
    """Number and version in the header, 第 N 页 / 共 M 页 and the QR caption on every page."""
    entrustment = closed_with_a_return(flow)
    _, number, path = render(DocumentType.FINAL_REPORT, entrustment, name="final_report-furniture")
    pages = page_count(path)
    assert pages >= 2
    text = pdftotext(path).split("\f")
    for n, page in enumerate(text[:pages], start=1):
        flat = squash(page)
        assert number in flat, f"page {n} has no document number"
        assert "第1版" in flat, f"page {n} has no version"
        assert f"第{n}页/共{pages}页" in flat, f"page {n} has no page number"
        assert "扫码核验真伪" in flat, f"page {n} has no QR caption"


def test_the_qr_code_encodes_the_verify_url_and_comes_first(flow):
    """The QR is a fixed box placed before the content, so page 1 has it too; no other resource."""
    from documents.rendering import qr_data_uri, render_html

    entrustment = flow.to("bonded")
    url = "http://127.0.0.1:8000/verify/abc"
    html = render_html(DocumentType.BOND_CERTIFICATE, build_context(DocumentType.BOND_CERTIFICATE, entrustment),
                       number="BZ-2026-000001", version=2, verify_url=url, issued_at=ISSUED_AT)
    assert qr_data_uri(url).startswith("data:image/svg+xml")
    assert html.index('class="verify-qr"') < html.index("<h1>")
    assert 'lang="zh-Hans"' in html
    assert not re.search(r"(src|href)=\"(?!data:)", html), "no external resources"


# --------------------------------------------------------------------------- refusals


AVAILABLE_FROM = {  # the first step of the happy path at which each document has all its facts
    DocumentType.ENTRUSTMENT_LETTER: "submitted",
    DocumentType.AGREEMENT: "accepted",
    DocumentType.APPOINTMENT: "agency_appointed",
    DocumentType.BOND_CERTIFICATE: "bonded",
    DocumentType.DETECTION_REPORT: "detected",
    DocumentType.HANDOVER_RECORD: "in_custody",
    DocumentType.RESERVE_DETERMINATION: "reserve_set",
    DocumentType.INQUIRY_RECORD: "sold",  # the first lot's round is still open while selling
    DocumentType.SALE_CONFIRMATION: "sold",
    DocumentType.FX_APPLICATION: "proceeds_received",
    DocumentType.CREDIT_NOTICE: "credited",
    DocumentType.TREASURY_REMITTANCE: "remitted",
    DocumentType.FINAL_REPORT: "closed",
}


def test_each_document_refuses_until_its_facts_are_on_the_record(flow):
    failures = []
    for step in STEPS:
        entrustment = flow.to(step)
        for doc_type, first in AVAILABLE_FROM.items():
            if doc_type in LOT_TYPES and not entrustment.lots.exists():
                with pytest.raises(ValueError):
                    build_context(doc_type, entrustment, "lot:0")
                continue
            try:
                context = build_context(doc_type, entrustment, subject_for(doc_type, entrustment))
            except MissingFacts as exc:
                assert exc.missing and str(exc).startswith("Missing facts for ")
                if STEPS.index(step) >= STEPS.index(first):
                    failures.append(f"{doc_type} refused at {step}: {exc}")
            else:
                if STEPS.index(step) < STEPS.index(first):
                    failures.append(f"{doc_type} built at {step}, before {first}: {context['facts']}")
    assert not failures, "\n".join(failures)
    # No return to victims on this path: there is nothing for a return list to certify.
    with pytest.raises(MissingFacts, match="approved return"):
        build_context(DocumentType.RETURN_LIST, flow.entrustment)


def test_sale_confirmation_of_a_lot_without_fills_is_refused(world):
    flow = Flow(world)
    entrustment = flow.to("reserve_set")
    lot = entrustment.lots.order_by("sequence").first()
    with pytest.raises(MissingFacts) as refused:
        build_context(DocumentType.SALE_CONFIRMATION, entrustment, f"lot:{lot.pk}")
    assert str(refused.value).startswith("Missing facts for Sale confirmation: ")
    assert "fills" in str(refused.value) and f"lot {lot.sequence}" in str(refused.value)
    # An inquiry record needs a round; a reserve determination of the same lot is fine.
    with pytest.raises(MissingFacts, match="inquiry round"):
        build_context(DocumentType.INQUIRY_RECORD, entrustment, f"lot:{lot.pk}")
    assert build_context(DocumentType.RESERVE_DETERMINATION, entrustment, f"lot:{lot.pk}")["facts"]


def test_final_report_of_an_open_entrustment_is_refused(world):
    entrustment = Flow(world).to("remitted")
    with pytest.raises(MissingFacts) as refused:
        build_context(DocumentType.FINAL_REPORT, entrustment)
    message = str(refused.value)
    assert message.startswith("Missing facts for Final disposal report: ")
    assert "not closed" in message and "已上缴国库" in message


def test_treasury_remittance_before_approval_names_every_missing_fact(world):
    flow = Flow(world)
    entrustment = flow.to("credited")
    money.remittance_prepare(actor=world.shunyi_officer, entrustment=entrustment,
                             payment_code=f"{entrustment.pk:020d}")
    entrustment.refresh_from_db()
    with pytest.raises(MissingFacts) as refused:
        build_context(DocumentType.TREASURY_REMITTANCE, entrustment)
    assert len(refused.value.missing) == 2
    assert "remittance was made" in str(refused.value) and "treasury receipt" in str(refused.value)


def test_subjects_are_checked(flow):
    entrustment = flow.to("reserve_set")
    with pytest.raises(ValueError, match="lot:<pk>"):
        build_context(DocumentType.SALE_CONFIRMATION, entrustment, "")
    with pytest.raises(ValueError, match="not a lot of"):
        build_context(DocumentType.RESERVE_DETERMINATION, entrustment, "lot:999999999")
    with pytest.raises(ValueError, match="no subject"):
        build_context(DocumentType.AGREEMENT, entrustment, "lot:1")
    with pytest.raises(ValueError, match="Unknown document type"):
        build_context("passport", entrustment)
    with pytest.raises(ValueError):
        render_pdf("../base", {}, number="X", version=1, verify_url="http://x", issued_at=ISSUED_AT)


def test_agency_documents_refuse_before_an_agency_is_appointed(world):
    entrustment = Flow(world).to("accepted")
    with pytest.raises(MissingFacts, match="agency"):
        issuer_for(DocumentType.DETECTION_REPORT, entrustment)
    assert issuer_for(DocumentType.AGREEMENT, entrustment) == world.bce
    assert issuer_for(DocumentType.ENTRUSTMENT_LETTER, entrustment) == world.shunyi


# --------------------------------------------------------------------------- rare characters


def test_rare_characters_in_names_print(world):
    flow = Flow(world, case_number="顺公立字〔2025〕300号")
    flow.to("credited")
    from cases.models import Case

    Case.objects.filter(pk=flow.entrustment.case_id).update(title="吉𠮷网络传销案")
    entrustment = closed_with_a_return(flow, recipient="𠀀𠮷某")
    _, _, letter = render(DocumentType.ENTRUSTMENT_LETTER, entrustment, name="rare-entrustment_letter")
    _, _, returns = render(DocumentType.RETURN_LIST, entrustment, name="rare-return_list")
    letter_text, returns_text = pdftotext(letter), pdftotext(returns)
    fonts = subprocess.run(["pdffonts", str(returns)], capture_output=True, text=True, check=True).stdout
    if "𠮷" in letter_text and "𠀀" in returns_text:
        assert "吉𠮷网络传销案" in squash(letter_text)
        assert "𠀀𠮷某" in squash(returns_text)
    else:  # pdftotext could not map the glyphs: at least a fallback font must be embedded
        assert re.search(r"HanaMin", fonts), fonts
    first_page_png(returns)


# --------------------------------------------------------------------------- scale


def test_final_report_with_ten_thousand_holdings(flow, capsys):
    entrustment = flow.to("closed")
    btc = flow.w.btc
    n = 10_000
    Holding.objects.bulk_create([
        Holding(case=entrustment.case, entrustment=entrustment, asset=btc, address=f"bc1qinventory{i:030d}",
                declared_amount=100_000 + i, accepted_amount=100_000 + i, location=f"冷钱包 HW-{i // 100:03d}",
                status=HoldingStatus.IN_CUSTODY)
        for i in range(n)
    ], batch_size=2000)
    started = time.perf_counter()
    context = build_context(DocumentType.FINAL_REPORT, entrustment)
    built = time.perf_counter()
    pdf = render_pdf(DocumentType.FINAL_REPORT, context, number="BG-2026-999999", version=1, issued_at=ISSUED_AT,
                     verify_url="http://127.0.0.1:8000/verify/big")
    done = time.perf_counter()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "final_report-10000-holdings.pdf"
    path.write_bytes(pdf)
    pages = page_count(path)
    with capsys.disabled():
        print(f"\n10,000-holding final report: build_context {built - started:.2f} s, render {done - built:.2f} s, "
              f"{pages} pages, {len(pdf) / 1e6:.1f} MB")
    assert pages > 100
    assert context["inventory"]["count"] == n + 2
    text = pdftotext(path)
    assert "bc1qinventory000000000000000000000000009999" in text
    assert f"第{pages}页/共{pages}页" in squash(text)


def test_the_final_report_reads_do_not_grow_with_the_number_of_holdings(flow):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    entrustment = flow.to("closed")

    def add(prefix, count):
        Holding.objects.bulk_create([
            Holding(case=entrustment.case, entrustment=entrustment, asset=flow.w.btc, address=f"bc1q{prefix}{i:030d}",
                    declared_amount=1, accepted_amount=1, location="x", status=HoldingStatus.IN_CUSTODY)
            for i in range(count)])

    add("a", 10)
    build_context(DocumentType.FINAL_REPORT, entrustment)  # warm the entrustment's cached relations
    with CaptureQueriesContext(connection) as small:
        build_context(DocumentType.FINAL_REPORT, entrustment)
    add("b", 500)
    with CaptureQueriesContext(connection) as large:
        context = build_context(DocumentType.FINAL_REPORT, entrustment)
    assert len(large) == len(small)
    assert context["inventory"]["count"] == 512


def test_long_per_row_lists_switch_to_the_fast_listing(flow):
    """Detection reports of hundreds of addresses print a fixed-width listing, not a slow table."""
    from cases.models import Detection

    entrustment = flow.to("closed")
    holdings = Holding.objects.bulk_create([
        Holding(case=entrustment.case, entrustment=entrustment, asset=flow.w.btc, address=f"bc1qlong{i:030d}",
                declared_amount=5_000 + i, accepted_amount=5_000 + i, location="x", status=HoldingStatus.IN_CUSTODY)
        for i in range(300)])
    Detection.objects.bulk_create([
        Detection(holding=h, observed_amount=h.declared_amount, block_height=900_001, controlled=True, matches=True,
                  witness=flow.w.witness, recorded_by=flow.w.agency_officer) for h in holdings])
    started = time.perf_counter()
    context, _, path = render(DocumentType.DETECTION_REPORT, entrustment, name="detection_report-302-addresses")
    seconds = time.perf_counter() - started
    assert context["long_list"]["count"] == 302
    text = pdftotext(path)
    assert "bc1qlong000000000000000000000000000299" in text
    assert "0.00005299" in text
    assert seconds < 20, seconds


def test_a_detection_mismatch_is_certified_with_the_difference(world):
    from cases import services

    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕400号")
    entrustment = flow.to("bonded")
    services.detection_record(actor=world.agency_officer, entrustment=entrustment,
                              observations=flow.observations(BTC=240_000_000), witness=world.witness)
    entrustment = flow.refresh()
    assert entrustment.state == "detection_mismatch"
    context, number, path = render(DocumentType.DETECTION_REPORT, entrustment, name="detection_report-mismatch")
    assert context["facts"]["检测结论"] == "1 个地址不一致（1 个地址）"
    assert context["facts"]["申报/检测 BTC"] == "2.50000000 BTC / 2.40000000 BTC"
    text = squash(pdftotext(path))
    assert "不一致" in text and "差额-0.10000000" in text and number in text
