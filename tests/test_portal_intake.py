"""The police case intake over HTTP: a case, its basis, holdings by hand and by file, evidence, entrustment.

Pages are driven with the Django test client and `sign_in`, as the personas of the World.
"""

import csv
import hashlib
import io
from datetime import datetime, timezone as dt_timezone

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from openpyxl import Workbook

from cases import intake, services
from cases.demo import demo_address
from cases.models import Case, Entrustment, Event, EvidenceFile, Holding

from .factories import BASIS_DATE, SEIZED_AT, AssetFactory, ltc, sign_in

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def client(client):
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def as_user(client, user):
    sign_in(client, user)
    return client


def register(world, number="顺公立字〔2025〕500号", officer=None, bureau=None):
    return services.case_register(actor=officer or world.shunyi_officer, bureau=bureau or world.shunyi,
                                  case_number=number, title="网络传销案", seized_at=SEIZED_AT,
                                  seizure_decision_no="顺扣〔2025〕5号", custodian="涉案财物管理中心")


@pytest.fixture
def case(world):
    return register(world)


def address(fmt, label):
    return demo_address(fmt, f"intake-{label}")


def csv_file(rows, *, header=("asset", "address", "amount", "location"), encoding="utf-8", name="holdings.csv"):
    text = io.StringIO()
    writer = csv.writer(text)
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return SimpleUploadedFile(name, text.getvalue().encode(encoding), content_type="text/csv")


def xlsx_file(rows, *, header=("asset", "chain", "address", "amount", "location"), name="holdings.xlsx"):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return SimpleUploadedFile(name, buffer.getvalue(),
                              content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def upload(client, case, file):
    return client.post(reverse("case-import", args=[case.pk]), {"file": file})


def page(response) -> str:
    return response.content.decode()


def report_rows(response) -> dict[int, list[tuple[str, str]]]:
    """{row: [(column, message), …]} as the report shows them."""
    rows: dict[int, list[tuple[str, str]]] = {}
    for e in response.context["errors"]:
        rows.setdefault(e.row, []).append((e.column, e.message))
    return rows


# --------------------------------------------------------------------------- the whole intake


def test_a_shunyi_officer_takes_a_case_from_registration_to_an_entrustment(client, world):
    as_user(client, world.shunyi_officer)

    # 1. Register the case; the seizure time is read as Beijing time.
    assert client.get(reverse("case-intake")).status_code == 200
    response = client.post(reverse("case-intake"), {
        "bureau": world.shunyi.pk, "case_number": "顺公立字〔2025〕501号", "title": "网络传销案",
        "seized_at": "2025-06-01T16:00", "seizure_decision_no": "顺扣〔2025〕501号", "custodian": "涉案财物管理中心"})
    case = Case.objects.get(case_number="顺公立字〔2025〕501号")
    assert response.status_code == 302 and response["Location"] == reverse("case-detail", args=[case.pk])
    assert case.bureau == world.shunyi and case.created_by == world.shunyi_officer
    assert case.seized_at == datetime(2025, 6, 1, 8, 0, tzinfo=dt_timezone.utc)

    # 2. The legal basis.
    response = client.post(reverse("case-basis", args=[case.pk]), {
        "kind": "confiscation", "document_no": "顺没〔2025〕501号", "basis_date": "2025-06-02", "authority": "顺义分局"})
    assert response.status_code == 302
    case.refresh_from_db()
    assert (case.legal_basis, case.basis_document_no, case.basis_date) == ("confiscation", "顺没〔2025〕501号",
                                                                          BASIS_DATE)

    # 3. Two holdings by hand.
    by_hand = [(world.btc, address("btc", "hand-1"), "1.5", "硬件钱包 HW-1"),
               (world.eth, address("evm", "hand-2"), "10", "硬件钱包 HW-2")]
    for asset, addr, amount, location in by_hand:
        response = client.post(reverse("case-holdings", args=[case.pk]),
                               {"asset": asset.pk, "address": addr, "amount": amount, "location": location})
        assert response.status_code == 302, page(response)
    assert case.holdings.count() == 2

    # 4. Three more from a CSV file, two from a workbook.
    response = upload(client, case, csv_file([
        ("BTC", address("btc", "csv-1"), "0.25", "手机钱包"),
        ("USDT@tron", address("tron", "csv-2"), "250,000", "助记词 M-3"),
        ("ETH", address("evm", "csv-3"), "0.000000000000000001", "交易所账户"),
    ]))
    assert response.status_code == 302, page(response)
    assert case.holdings.count() == 5
    response = upload(client, case, xlsx_file([
        ("USDT", "tron", address("tron", "xlsx-1"), "1000.5", "U盘"),
        ("BTC", None, address("btc", "xlsx-2"), "2", "纸钱包"),
    ]))
    assert response.status_code == 302, page(response)
    assert case.holdings.count() == 7
    wei = case.holdings.get(address=address("evm", "csv-3"))
    assert wei.declared_amount == 1 and wei.asset == world.eth
    assert case.holdings.get(address=address("tron", "csv-2")).declared_amount == 250_000 * 10**6

    # 5. Evidence, with its SHA-256 shown.
    response = client.post(reverse("case-evidence", args=[case.pk]), {
        "kind": "seizure", "description": "扣押清单", "file": SimpleUploadedFile("扣押清单.pdf", PDF)})
    assert response.status_code == 302
    evidence = EvidenceFile.objects.get(case=case)
    assert evidence.sha256 == hashlib.sha256(PDF).hexdigest()
    detail = client.get(response["Location"])
    assert hashlib.sha256(PDF).hexdigest() in page(detail)
    assert "1.50000000 BTC" in page(detail) and "250,000.000000 USDT" in page(detail)

    # 6. Entrust four of the seven holdings to BCE.
    chosen = list(case.holdings.order_by("id")[:4])
    response = client.post(reverse("case-entrust", args=[case.pk]),
                           {"holdings": [h.pk for h in chosen], "bce": world.bce.pk})
    entrustment = Entrustment.objects.get(case=case)
    assert response.status_code == 302
    assert response["Location"] == reverse("entrustment-detail", args=[entrustment.pk])
    assert set(entrustment.holdings.all()) == set(chosen)
    assert entrustment.bce == world.bce and entrustment.prepared_by == world.shunyi_officer
    detail = page(client.get(reverse("case-detail", args=[case.pk])))
    assert entrustment.number in detail and reverse("entrustment-detail", args=[entrustment.pk]) in detail

    # Only the three left are offered for a further entrustment.
    form = client.get(reverse("case-entrust", args=[case.pk])).context["form"]
    assert set(form.fields["holdings"].queryset) == set(case.holdings.exclude(pk__in=[h.pk for h in chosen]))


def test_the_sample_files_import_cleanly(client, world, case):
    ltc()
    AssetFactory(symbol="USDT", name="Tether USD (ERC-20)", chain="ethereum", decimals=6, address_format="evm",
                 confirmations_required=64, supply_cap=200_000_000_000 * 10**6)
    as_user(client, world.shunyi_officer)
    for name in ("holdings-import.csv", "holdings-import.xlsx"):
        other = register(world, f"顺公立字〔2025〕5{len(name)}号")
        with open(f"docs/samples/{name}", "rb") as f:
            response = upload(client, other, SimpleUploadedFile(name, f.read()))
        assert response.status_code == 302, page(response)
        assert other.holdings.count() == 6


# --------------------------------------------------------------------------- forms keep what was typed


def test_a_refused_holding_keeps_what_was_typed_and_names_the_field(client, world, case):
    as_user(client, world.shunyi_officer)
    typed = {"asset": world.btc.pk, "address": address("btc", "typed"), "amount": "1,5", "location": "硬件钱包"}
    response = client.post(reverse("case-holdings", args=[case.pk]), typed)
    assert response.status_code == 200
    form = response.context["form"]
    assert list(form.errors) == ["amount"] and "commas only to group thousands" in form.errors["amount"][0]
    html = page(response)
    assert f'value="{typed["address"]}"' in html and 'value="1,5"' in html
    assert 'aria-describedby="id_amount_helptext id_amount_error"' in html and 'id="id_amount_error"' in html
    assert not Holding.objects.exists()


def test_a_litecoin_address_refused_for_bitcoin_is_shown_at_the_address(client, world, case):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-holdings", args=[case.pk]), {
        "asset": world.btc.pk, "address": address("ltc", "wrong"), "amount": "1", "location": "钱包"})
    assert "Litecoin address, not a Bitcoin one" in response.context["form"].errors["address"][0]


def test_a_pre_judgment_basis_without_consent_is_refused_at_the_kind(client, world, case):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-basis", args=[case.pk]), {
        "kind": "pre_judgment", "document_no": "顺先处〔2025〕1号", "basis_date": "2025-06-02", "authority": "顺义分局",
        "approval_level": "county"})
    assert response.status_code == 200
    assert "owner's consent" in response.context["form"].errors["kind"][0]
    assert 'id="id_kind_error"' in page(response)
    case.refresh_from_db()
    assert case.legal_basis == ""


def test_an_empty_post_is_answered_with_every_required_field_named(client, world, case):
    as_user(client, world.shunyi_officer)
    for name in ("case-basis", "case-holdings", "case-entrust"):
        form = client.post(reverse(name, args=[case.pk]), {}).context["form"]
        assert form.is_bound and form.errors, name
    assert set(client.post(reverse("case-holdings", args=[case.pk]), {}).context["form"].errors) == {
        "asset", "address", "amount", "location"}


def test_register_and_add_another_comes_back_to_an_empty_holding_form(client, world, case):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-holdings", args=[case.pk]), {
        "asset": world.usdt.pk, "address": address("tron", "another"), "amount": "12.5", "location": "U盘",
        "another": "1"})
    assert response["Location"] == reverse("case-holdings", args=[case.pk])
    response = client.get(response["Location"])
    assert "Holding registered: 12.500000 USDT" in page(response)
    assert not response.context["form"].is_bound


def test_a_basis_document_dated_in_the_future_is_refused(client, world, case):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-basis", args=[case.pk]), {
        "kind": "judgment", "document_no": "判", "basis_date": "2999-01-01", "authority": "法院"})
    assert "cannot be in the future" in response.context["form"].errors["basis_date"][0]


def test_a_duplicate_case_number_is_refused_at_the_case_number(client, world, case):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-intake"), {
        "bureau": world.shunyi.pk, "case_number": case.case_number, "title": "t", "seized_at": "2025-06-01T16:00",
        "seizure_decision_no": "x", "custodian": "y"})
    assert response.status_code == 200
    assert "already has a case with this number" in response.context["form"].errors["case_number"][0]
    assert Case.objects.count() == 1


# --------------------------------------------------------------------------- import: the report


def test_bad_rows_are_reported_by_row_and_nothing_is_imported(client, world, case):
    as_user(client, world.shunyi_officer)
    events = Event.objects.count()
    response = upload(client, case, csv_file([
        ("BTC", address("btc", "r2"), "1", "钱包"),  # row 2: good
        ("BTC", address("btc", "r3"), "abc", "钱包"),  # row 3: not a number
        ("DOGE", address("btc", "r4"), "1", "钱包"),  # row 4: unknown asset
        ("ETH", address("evm", "r5"), "2", ""),  # row 5: no location
        ("ETH", address("evm", "r6"), "2", "钱包"),  # row 6: good
    ]))
    assert response.status_code == 200
    rows = report_rows(response)
    assert set(rows) == {3, 4, 5}
    assert rows[3] == [("amount", "“abc” is not a number.")]
    assert rows[4][0][0] == "asset" and "Unknown asset “DOGE”" in rows[4][0][1]
    assert rows[5][0][0] == "location"
    assert not Holding.objects.exists() and Event.objects.count() == events
    html = page(response)
    assert "Nothing was imported" in html and "Import the 2 good rows only" in html


def test_import_the_good_rows_only_imports_exactly_those_once(client, world, case):
    as_user(client, world.shunyi_officer)
    good = [address("btc", "g2"), address("btc", "g4")]
    response = upload(client, case, csv_file([
        ("BTC", good[0], "1", "钱包"),
        ("BTC", address("btc", "b3"), "-1", "钱包"),
        ("BTC", good[1], "0.1", "钱包"),
    ]))
    token = response.context["token"]
    assert [r.row for r in response.context["good"]] == [2, 4]

    response = client.post(reverse("case-import", args=[case.pk]), {"token": token})
    assert response.status_code == 302
    assert sorted(case.holdings.values_list("address", flat=True)) == sorted(good)
    assert case.holdings.get(address=good[1]).declared_amount == 10_000_000

    # The token is used once: a second click (or a replay) imports nothing more.
    response = client.post(reverse("case-import", args=[case.pk]), {"token": token}, follow=True)
    assert "no longer pending" in page(response)
    assert case.holdings.count() == 2


def test_a_token_of_one_case_imports_nothing_into_another(client, world, case):
    other = register(world, "顺公立字〔2025〕502号")
    as_user(client, world.shunyi_officer)
    response = upload(client, case, csv_file([("BTC", address("btc", "t2"), "1", "钱包"),
                                              ("BTC", "nonsense", "1", "钱包")]))
    token = response.context["token"]
    client.post(reverse("case-import", args=[other.pk]), {"token": token})
    assert not Holding.objects.exists()
    # A made-up token imports nothing either.
    client.post(reverse("case-import", args=[case.pk]), {"token": "forged"})
    assert not Holding.objects.exists()


def test_a_gb18030_csv_from_chinese_excel_is_read_with_its_chinese_text(client, world, case):
    as_user(client, world.shunyi_officer)
    rows = [("BTC", address("btc", "gb-1"), "1.5", "扣押硬件钱包（冷钱包）HW-001"),
            ("ETH", address("evm", "gb-2"), "3", "嫌疑人手机 · 助记词")]
    file = csv_file(rows, header=("资产", "地址", "数量", "存放位置"), encoding="gb18030")
    with pytest.raises(UnicodeDecodeError):
        file.read().decode("utf-8")  # really not UTF-8
    file.seek(0)
    response = upload(client, case, file)
    assert response.status_code == 302, page(response)
    assert sorted(case.holdings.values_list("location", flat=True)) == sorted(r[3] for r in rows)


def test_a_damaged_utf8_csv_is_refused_rather_than_read_as_garbled_gbk(client, world, case):
    as_user(client, world.shunyi_officer)
    rows = [("BTC", address("btc", f"dmg-{i}"), "1", "扣押硬件钱包 HW-00%s" % i) for i in range(5)]
    data = bytearray(csv_file(rows).read())
    data[data.index("钱".encode()) + 1] = 0x41  # one byte of one character damaged, on line 2
    response = upload(client, case, SimpleUploadedFile("h.csv", bytes(data)))
    assert "damaged bytes on line 2" in response.context["form"].errors["file"][0]
    assert not Holding.objects.exists()


def test_a_utf8_csv_with_a_byte_order_mark_is_read(client, world, case):
    as_user(client, world.shunyi_officer)
    body = "asset,address,amount,location\r\nBTC,%s,1,钱包\r\n" % address("btc", "bom")
    response = upload(client, case, SimpleUploadedFile("h.csv", b"\xef\xbb\xbf" + body.encode()))
    assert response.status_code == 302 and case.holdings.count() == 1


def test_a_bitcoin_address_on_a_litecoin_row_is_named_in_the_report(client, world, case):
    ltc()
    as_user(client, world.shunyi_officer)
    response = upload(client, case, csv_file([
        ("LTC", address("ltc", "l2"), "5", "钱包"),
        ("LTC", address("btc", "l3"), "5", "钱包"),
    ]))
    assert report_rows(response) == {3: [("address", "This is a Bitcoin address, not a Litecoin one.")]}
    assert "This is a Bitcoin address, not a Litecoin one." in page(response)
    assert not Holding.objects.exists()


def test_a_duplicate_within_the_file_is_reported(client, world, case):
    as_user(client, world.shunyi_officer)
    same = address("btc", "dup")
    other = address("evm", "dup")
    response = upload(client, case, csv_file([
        ("BTC", same, "1", "钱包"),
        ("BTC", same.upper(), "1", "钱包"),  # the same address, spelt in capitals
        ("ETH", other, "1", "钱包"),
        ("ETH", other.lower(), "2", "钱包"),  # same address, another amount: which one is right?
    ]))
    rows = report_rows(response)
    assert rows[3] == [("address", "Repeats row 2 (same asset and address).")]
    assert rows[4] == [("address", "Same asset and address as row 5, with a different amount.")]
    assert rows[5] == [("address", "Same asset and address as row 4, with a different amount.")]
    assert [r.row for r in response.context["good"]] == [2]
    assert not Holding.objects.exists()


def test_a_row_already_registered_on_the_case_is_reported(client, world, case):
    existing = address("btc", "existing")
    services.holding_register(actor=world.shunyi_officer, case=case, asset=world.btc, address=existing, amount="1",
                              location="钱包")
    as_user(client, world.shunyi_officer)
    response = upload(client, case, csv_file([("BTC", existing, "1", "钱包")]))
    assert report_rows(response) == {2: [("address", "This case already has a BTC holding at this address.")]}
    assert response.context["token"] is None  # no good rows: nothing to offer
    assert case.holdings.count() == 1


def test_an_asset_on_several_chains_needs_its_chain(client, world, case):
    AssetFactory(symbol="USDT", name="Tether USD (ERC-20)", chain="ethereum", decimals=6, address_format="evm",
                 confirmations_required=64, supply_cap=200_000_000_000 * 10**6)
    as_user(client, world.shunyi_officer)
    response = upload(client, case, csv_file([
        ("USDT", address("tron", "u2"), "1", "钱包"),
        ("USDT", address("tron", "u3"), "1", "钱包", "TRC20"),
        ("USDT", address("evm", "u4"), "1", "钱包", "ethereum"),
        ("USDT@tron", address("tron", "u5"), "1", "钱包", "ethereum"),
    ], header=("asset", "address", "amount", "location", "chain")))
    rows = report_rows(response)
    assert set(rows) == {2, 5}
    assert "several chains" in rows[2][0][1] and "USDT@tron" in rows[2][0][1]
    assert rows[5][0][0] == "chain"


def test_a_workbook_amount_stored_as_a_number_is_taken_to_excels_precision_only(client, world, case):
    as_user(client, world.shunyi_officer)
    response = upload(client, case, xlsx_file([
        ("BTC", None, address("btc", "x2"), 0.1, "钱包"),  # a float cell: 0.1 as Excel shows it
        ("ETH", None, address("evm", "x3"), 1234567.123456789012, "钱包"),  # more digits than Excel keeps
        ("BTC", None, address("btc", "x4"), 3, "钱包"),
    ]))
    rows = report_rows(response)
    assert set(rows) == {3} and "Format the amount column as Text" in rows[3][0][1]
    client.post(reverse("case-import", args=[case.pk]), {"token": response.context["token"]})
    assert dict(case.holdings.values_list("address", "declared_amount")) == {
        address("btc", "x2"): 10_000_000, address("btc", "x4"): 300_000_000}


def test_an_import_is_all_or_nothing_even_when_the_service_refuses_a_late_row(world, case):
    # Rows that passed the check earlier, but whose second row is refused when saved (declared meanwhile).
    taken = address("btc", "late-2")
    rows = [{"row": 2, "asset": world.btc.pk, "address": address("btc", "late-1"), "amount": "1", "location": "x"},
            {"row": 3, "asset": world.btc.pk, "address": taken, "amount": "1", "location": "x"}]
    services.holding_register(actor=world.shunyi_officer, case=case, asset=world.btc, address=taken, amount="2",
                              location="y")
    with pytest.raises(intake.ImportRefused) as exc:
        intake.import_rows(actor=world.shunyi_officer, case=case, rows=rows)
    assert [(e.row, e.column) for e in exc.value.errors] == [(3, "address")]
    assert list(case.holdings.values_list("address", flat=True)) == [taken]


# --------------------------------------------------------------------------- import: files refused whole


@pytest.mark.parametrize("file, fragment", [
    (SimpleUploadedFile("h.txt", b"asset,address,amount,location\n"), "Only .csv and .xlsx files"),
    (SimpleUploadedFile("h.xlsx", b"asset,address,amount,location\n"), "not an Excel workbook"),
    (SimpleUploadedFile("h.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100), "old Excel (.xls)"),
    (SimpleUploadedFile("h.csv", b"PK\x03\x04" + b"\x00" * 100), "is a zip archive"),
    (SimpleUploadedFile("h.xlsx", b"PK\x03\x04" + b"\x00" * 100), "damaged"),
    (SimpleUploadedFile("h.csv", "asset,address\r\n".encode("utf-16")), "UTF-16"),
    (SimpleUploadedFile("h.csv", b"\x81\x30\xff\xfe,\x80\n"), "UTF-8 or GB18030"),
    (SimpleUploadedFile("h.csv", "BTC,bc1q…,1,钱包\n".encode()), "must be a header"),
    (SimpleUploadedFile("h.csv", b"asset,address,amount,location\n"), "no data rows"),
])
def test_a_file_that_cannot_be_imported_is_refused_with_a_clear_message(client, world, case, file, fragment):
    as_user(client, world.shunyi_officer)
    response = upload(client, case, file)
    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert fragment in " ".join(errors), errors
    assert not Holding.objects.exists()


def test_a_zip_that_is_not_a_workbook_is_refused(client, world, case):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    as_user(client, world.shunyi_officer)
    response = upload(client, case, SimpleUploadedFile("h.xlsx", buffer.getvalue()))
    assert "not an Excel workbook" in response.context["form"].errors["file"][0]


def test_an_oversized_or_overlong_import_file_is_refused(client, world, case, settings):
    as_user(client, world.shunyi_officer)
    settings.HOLDINGS_IMPORT_MAX_BYTES = 1024
    rows = [("BTC", address("btc", f"big-{i}"), "1", "钱包") for i in range(40)]
    response = upload(client, case, csv_file(rows))
    assert "larger than the limit of 1.0 KB" in response.context["form"].errors["file"][0]

    settings.HOLDINGS_IMPORT_MAX_BYTES = 5 * 1024 * 1024
    settings.HOLDINGS_IMPORT_MAX_ROWS = 10
    response = upload(client, case, csv_file(rows))
    assert "more than 10 data rows" in response.context["form"].errors["file"][0]
    assert not Holding.objects.exists()


# --------------------------------------------------------------------------- evidence


@pytest.mark.parametrize("name, content, fragment", [
    ("virus.exe", b"MZ\x90\x00", "only PDF, JPEG, PNG, MP4, MP3 and ZIP"),
    ("scan.pdf", b"MZ\x90\x00 not a pdf", "content is not PDF"),
    ("photo.jpg", PNG, "content is not JPEG"),
    ("noextension", PDF, "only PDF"),
])
def test_evidence_of_the_wrong_type_is_refused(client, world, case, name, content, fragment):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-evidence", args=[case.pk]),
                           {"kind": "seizure", "file": SimpleUploadedFile(name, content)})
    assert response.status_code == 200
    assert fragment in response.context["form"].errors["file"][0]
    assert not EvidenceFile.objects.exists()


def test_oversized_evidence_is_refused(client, world, case, settings):
    settings.EVIDENCE_MAX_BYTES = 10
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-evidence", args=[case.pk]),
                           {"kind": "seizure", "file": SimpleUploadedFile("scan.pdf", PDF)})
    assert "the limit is 10" in response.context["form"].errors["file"][0]
    assert not EvidenceFile.objects.exists()


@pytest.mark.parametrize("name, content", [
    ("photo.png", PNG), ("photo.JPEG", b"\xff\xd8\xff\xe0" + b"\x00" * 20),
    ("call.mp3", b"ID3\x03\x00" + b"\x00" * 20), ("video.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 20),
    ("bundle.zip", b"PK\x05\x06" + b"\x00" * 18),
])
def test_evidence_of_each_accepted_type_is_kept_with_its_hash(client, world, case, name, content):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-evidence", args=[case.pk]),
                           {"kind": "recording", "file": SimpleUploadedFile(name, content)}, follow=True)
    assert hashlib.sha256(content).hexdigest() in page(response)
    assert EvidenceFile.objects.get().original_name == name


# --------------------------------------------------------------------------- who may do what


ACTIONS = {
    "case-basis": {"kind": "judgment", "document_no": "判", "basis_date": "2025-06-02", "authority": "法院"},
    "case-holdings": None,  # filled in per test: needs an asset
    "case-import": None,
    "case-evidence": None,
    "case-entrust": None,
}


def action_posts(world, case):
    holding = Holding.objects.filter(case=case).first()
    return {
        "case-basis": ACTIONS["case-basis"],
        "case-holdings": {"asset": world.btc.pk, "address": address("btc", "perm"), "amount": "1", "location": "x"},
        "case-import": {"file": csv_file([("BTC", address("btc", "perm-csv"), "1", "x")])},
        "case-evidence": {"kind": "seizure", "file": SimpleUploadedFile("scan.pdf", PDF)},
        "case-entrust": {"holdings": [holding.pk] if holding else [], "bce": world.bce.pk},
    }


def record_counts():
    return (Case.objects.count(), Holding.objects.count(), EvidenceFile.objects.count(), Entrustment.objects.count(),
            Event.objects.count(), Case.history.count())


@pytest.fixture
def shunyi_case_with_a_holding(world, case):
    services.holding_register(actor=world.shunyi_officer, case=case, asset=world.btc, address=address("btc", "h"),
                              amount="1", location="钱包")
    return case


@pytest.mark.security
def test_a_chaoyang_officer_gets_404_on_every_page_of_a_shunyi_case(client, world, shunyi_case_with_a_holding):
    case = shunyi_case_with_a_holding
    as_user(client, world.chaoyang_officer)
    before = record_counts()
    assert client.get(reverse("case-detail", args=[case.pk])).status_code == 404
    missing = client.get(reverse("case-detail", args=[case.pk + 1000]))
    assert missing.status_code == 404
    for name, data in action_posts(world, case).items():
        assert client.get(reverse(name, args=[case.pk])).status_code == 404, name
        assert client.post(reverse(name, args=[case.pk]), data).status_code == 404, name
    assert record_counts() == before


@pytest.mark.security
def test_a_supervisor_reads_the_case_but_cannot_change_it(client, world, shunyi_case_with_a_holding):
    case = shunyi_case_with_a_holding
    as_user(client, world.supervisor)
    before = record_counts()
    response = client.get(reverse("case-detail", args=[case.pk]))
    assert response.status_code == 200
    assert reverse("case-holdings", args=[case.pk]) not in page(response)  # no action offered
    assert client.get(reverse("case-intake")).status_code == 403
    assert client.post(reverse("case-intake"), {"bureau": world.shunyi.pk, "case_number": "x", "title": "x",
                                                "seized_at": "2025-06-01T08:00", "seizure_decision_no": "x",
                                                "custodian": "x"}).status_code == 403
    for name, data in action_posts(world, case).items():
        assert client.post(reverse(name, args=[case.pk]), data).status_code == 403, name
    assert record_counts() == before


@pytest.mark.security
def test_a_bureau_approver_does_not_prepare_the_intake(client, world, shunyi_case_with_a_holding):
    case = shunyi_case_with_a_holding
    as_user(client, world.shunyi_approver)
    before = record_counts()
    assert client.get(reverse("case-intake")).status_code == 403
    for name, data in action_posts(world, case).items():
        if name == "case-evidence":
            continue  # the bureau's approvers may add evidence (evidence_add admits them)
        assert client.post(reverse(name, args=[case.pk]), data).status_code == 403, name
    assert record_counts() == before


@pytest.mark.security
def test_an_officer_cannot_register_a_case_for_another_bureau(client, world):
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-intake"), {
        "bureau": world.chaoyang.pk, "case_number": "朝公立字〔2025〕1号", "title": "t",
        "seized_at": "2025-06-01T08:00", "seizure_decision_no": "x", "custodian": "y"})
    assert response.status_code == 200 and "bureau" in response.context["form"].errors
    assert not Case.objects.exists()


@pytest.mark.security
def test_strangers_and_anonymous_visitors_get_nothing(client, world, case):
    as_user(client, world.stranger)
    assert client.get(reverse("case-intake")).status_code == 403
    assert client.get(reverse("case-detail", args=[case.pk])).status_code == 404
    client.logout()
    for url in (reverse("case-intake"), reverse("case-detail", args=[case.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.security
def test_holdings_of_another_case_cannot_be_slipped_into_an_entrustment(client, world, shunyi_case_with_a_holding):
    other = register(world, "顺公立字〔2025〕503号")
    foreign = services.holding_register(actor=world.shunyi_officer, case=other, asset=world.btc,
                                        address=address("btc", "foreign"), amount="1", location="x")
    as_user(client, world.shunyi_officer)
    response = client.post(reverse("case-entrust", args=[shunyi_case_with_a_holding.pk]),
                           {"holdings": [foreign.pk], "bce": world.bce.pk})
    assert response.status_code == 200 and "holdings" in response.context["form"].errors
    assert not Entrustment.objects.exists()


# --------------------------------------------------------------------------- the case page


def test_the_case_page_needs_the_same_queries_for_2_or_30_holdings(client, world, case):
    def holdings(n, start=0):
        for i in range(start, start + n):
            services.holding_register(actor=world.shunyi_officer, case=case, asset=(world.btc, world.eth)[i % 2],
                                      address=address("btc" if i % 2 == 0 else "evm", f"q-{i}"), amount="1",
                                      location="钱包")

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(reverse("case-detail", args=[case.pk]))
            assert response.status_code == 200
        return len(ctx.captured_queries)

    as_user(client, world.shunyi_officer)
    holdings(2)
    first = list(case.holdings.all())
    services.entrustment_create(actor=world.shunyi_officer, case=case, holdings=first[:1], bce=world.bce)
    services.evidence_add(actor=world.shunyi_officer, case=case, kind="seizure",
                          upload=SimpleUploadedFile("a.pdf", PDF))
    with_two = queries()
    holdings(28, start=2)
    services.entrustment_create(actor=world.shunyi_officer, case=case, holdings=first[1:], bce=world.bce)
    for i in range(5):
        services.evidence_add(actor=world.shunyi_officer, case=case, kind="other",
                              upload=SimpleUploadedFile(f"{i}.pdf", PDF))
    assert case.holdings.count() == 30
    assert queries() == with_two
    assert with_two <= 14  # 2FA rule + session saved on every request (idle timeout)
    assert page(client.get(reverse("case-detail", args=[case.pk]))).count('class="holding"') == 30
