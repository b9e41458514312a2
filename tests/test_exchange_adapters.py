"""The exchange adapters (HashKey Exchange, OSL) against the local emulator.

No database: plain functions on one emulator per module, bound to 127.0.0.1. Known answers for the
signatures were computed outside Python (``openssl dgst -sha256 -hmac``) and are checked again with
hmac/hashlib here. Fault tests are marked ``faults``.
"""

import base64
import csv
import hashlib
import hmac
import json
import math
import time
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from counterparties.errors import CounterpartyError, ErrorCode, IndeterminateResult, PermanentError, TransientError
from counterparties.exchanges import DepositStatus, ExchangeAdapter, HashKeyExchange, OrderStatus, OslExchange
from counterparties.exchanges.base import REDACTED, WithdrawalStatus
from counterparties.exchanges.hashkey import hashkey_signature
from counterparties.exchanges.osl import osl_signature
from emulators.exchange import start_exchange_emulator
from emulators.market import LIQUIDITY_MULTIPLE, LIQUIDITY_PROVIDERS

CSV_PATH = Path(__file__).resolve().parents[1] / "emulators" / "data" / "btcusd_bitstamp_1min_2025-01-07.csv"
VENUES = ["hashkey", "osl"]
ACCEPT_PATH = {"hashkey": "/market-place/accept-quote", "osl": "/retail/trade"}
SATOSHI = 10**8


# ---- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    base_url, controller = start_exchange_emulator(seed=20250107)
    yield controller
    controller.stop()


@pytest.fixture
def emu(emulator):
    emulator.set_market_minute(600)
    yield emulator
    emulator.clear_faults()
    emulator.set_quote_ttl(10)
    emulator.set_latency(0)
    emulator.set_market_minute(None)


class SpySession(requests.Session):
    """Keeps what really went on the wire, to prove the records never contain it."""

    def __init__(self):
        super().__init__()
        self.sent = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        return super().send(request, **kwargs)


def client(emu, venue, **overrides):
    creds = emu.credentials[venue]
    options = {"timeout": (2.0, 0.4), **overrides}
    if venue == "hashkey":
        secret = options.pop("secret", creds.secret)
        return HashKeyExchange(emu.hashkey_url, creds.api_key, secret, poll_interval=0.02, quote_wait=2.0, **options)
    secret = options.pop("secret", creds.secret)
    return OslExchange(emu.osl_url, creds.api_key, secret, creds.passphrase, **options)


def new_id(venue):
    return f"{venue}-lot-{uuid.uuid4().hex[:12]}"


def csv_day():
    with open(CSV_PATH, newline="") as fh:
        rows = list(csv.DictReader(fh))
    closes = [float(r["close"]) for r in rows]
    volume = sum(float(r["volume"]) for r in rows)
    returns = [math.log(closes[i] / closes[i - 1]) for i in range(1, len(closes))]
    mean = sum(returns) / len(returns)
    sigma_day = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)) * math.sqrt(len(closes))
    return closes, volume, sigma_day


# ---- signatures -------------------------------------------------------------------------------------


def test_hashkey_signature_matches_the_known_answer():
    secret = "hk-test-secret-not-real"
    query = ("rfqClOrderId=lot-7-r1&buyCcy=USD&sellCcy=BTC&sellAmount=1.50000000&rfqMode=real-time&expireSec=600"
             "&timestamp=1736208060000&recvWindow=5000")
    expected = "2e7c6072f4cfff69043f65f89c88fd31bcd24e098642aad21d4473e92b35fd83"  # openssl dgst -sha256 -hmac
    assert hashkey_signature(secret, query) == expected
    assert hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest() == expected
    # totalParams is the query string followed by the body
    assert hashkey_signature(secret, "a=1&b=2", "c=3") == hmac.new(secret.encode(), b"a=1&b=2c=3",
                                                                   hashlib.sha256).hexdigest()


def test_osl_signature_matches_the_known_answer():
    secret = "osl-test-secret-not-real"
    body = '{"tonce":1736208060000000,"tradeRequest":{"quoteId":"q-1","clientRequestId":"lot-7-r1"}}'
    expected_post = "f8dJZ+yDOhYzwYTJPeiYFHU2YhdsSS8p5pOalZntWBQ="  # openssl dgst -sha256 -hmac -binary | base64
    assert osl_signature(secret, 1736208060000, "post", "/api/3/retail/trade", body) == expected_post
    prehash = "1736208060000POST/api/3/retail/trade" + body
    digest = hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()
    assert base64.b64encode(digest).decode() == expected_post
    expected_get = "jiMbJLi9CiST1xXuv9fZZqyKi4CkEI6PIDXRJcW3N/o="
    assert osl_signature(secret, "1736208060000", "GET", "/api/3/retail/trade",
                         query_string="?clientRequestId=lot-7-r1") == expected_get


@pytest.mark.parametrize("venue, status, venue_code, shape", [
    ("hashkey", 400, "0001", {"code", "msg"}),
    ("osl", 401, "INVALID_SIGNATURE", {"resultCode", "errorCode", "message"}),
])
def test_emulator_refuses_a_wrong_signature_as_the_venue_does(emu, venue, status, venue_code, shape):
    records = []
    c = client(emu, venue, secret="not-the-secret", recorder=records.append)
    with pytest.raises(PermanentError) as refused:
        c.request_quote("BTC/USD", "sell", SATOSHI, 8, new_id(venue))
    assert refused.value.code == ErrorCode.BAD_SIGNATURE and not refused.value.transient
    assert (refused.value.http_status, refused.value.venue_code) == (status, venue_code)
    assert set(json.loads(records[-1].response_body)) == shape


@pytest.mark.parametrize("venue, status, venue_code", [("hashkey", 400, "-1021"), ("osl", 401, "TIMESTAMP_EXPIRED")])
def test_emulator_refuses_a_stale_timestamp_as_the_venue_does(emu, venue, status, venue_code):
    executed = len(emu.executions(venue))
    c = client(emu, venue, clock=lambda: time.time() - 120)
    with pytest.raises(TransientError) as refused:
        c.request_quote("BTC/USD", "sell", SATOSHI, 8, new_id(venue))
    assert refused.value.code == ErrorCode.TIMESTAMP_OUT_OF_WINDOW
    assert (refused.value.http_status, refused.value.venue_code) == (status, venue_code)
    assert len(emu.executions(venue)) == executed


# ---- the RFQ flow -----------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUES)
def test_rfq_accept_and_order_status_report_the_fill_with_fees(emu, venue):
    c = client(emu, venue)
    assert isinstance(c, ExchangeAdapter)
    cid = new_id(venue)
    executed = len(emu.executions(venue))

    quote = c.request_quote("BTC/USD", "sell", 123_456_789, 8, cid)
    assert isinstance(quote.price, Decimal) and quote.price > 0
    assert type(quote.quantity) is int and quote.quantity == 123_456_789
    assert quote.expires_at > quote.quoted_at and len(quote.quote_id) <= 100

    order = c.accept_quote(quote.quote_id, cid)
    status = c.order_status(cid)
    for o in (order, status):
        assert o.status == OrderStatus.FILLED and o.final
        assert o.requested_base_units == o.filled_base_units == 123_456_789
        assert o.avg_price == quote.price and isinstance(o.avg_price, Decimal)
        assert o.fee_currency == "USD" and isinstance(o.fees, Decimal) and o.fees > 0
        assert sum(f.quantity for f in o.fills) == o.filled_base_units
        assert all(type(f.quantity) is int and isinstance(f.price, Decimal) for f in o.fills)
        assert sum(f.fee for f in o.fills) == o.fees
        # 10 bps of the proceeds, rounded to the cent per fill
        assert abs(o.fees - o.gross * Decimal("0.001")) <= Decimal("0.01") * len(o.fills)
    assert status.fills == order.fills and status.order_id == order.order_id
    assert len(emu.executions(venue)) == executed + 1


def test_hashkey_collects_three_providers_quotes_best_first(emu):
    quotes = client(emu, "hashkey").request_quotes("BTC/USD", "sell", 2 * SATOSHI, 8, new_id("hashkey"))
    assert sorted(q.provider for q in quotes) == sorted(lp.name for lp in LIQUIDITY_PROVIDERS)
    assert [q.price for q in quotes] == sorted((q.price for q in quotes), reverse=True)


def test_hashkey_executes_an_rfq_once_even_if_another_quote_is_accepted(emu):
    c, cid = client(emu, "hashkey"), new_id("hashkey")
    quotes = c.request_quotes("BTC/USD", "sell", SATOSHI, 8, cid)
    executed = len(emu.executions("hashkey"))
    c.accept_quote(quotes[0].quote_id, cid)
    with pytest.raises(PermanentError) as refused:
        c.accept_quote(quotes[1].quote_id, cid)
    assert refused.value.code == ErrorCode.RFQ_CLOSED
    assert len(emu.executions("hashkey")) == executed + 1


def test_hashkey_takes_the_rfq_client_id_as_the_trade_key_and_honours_a_decline(emu):
    c, cid = client(emu, "hashkey"), new_id("hashkey")
    quotes = c.request_quotes("BTC/USD", "sell", SATOSHI, 8, cid)
    executed = len(emu.executions("hashkey"))
    with pytest.raises(ValueError):
        c.accept_quote(quotes[0].quote_id, "some-other-key")
    c.decline_quote(quotes[0].quote_id)
    with pytest.raises(PermanentError) as refused:
        c.accept_quote(quotes[0].quote_id, cid)
    assert refused.value.code == ErrorCode.INVALID_QUOTE
    assert len(emu.executions("hashkey")) == executed


def test_osl_refuses_to_execute_one_quote_twice_under_another_client_id(emu):
    c = client(emu, "osl")
    quote = c.request_quote("BTC/USD", "sell", SATOSHI, 8, "inquiry-1")
    executed = len(emu.executions("osl"))
    c.accept_quote(quote.quote_id, new_id("osl"))
    with pytest.raises(PermanentError) as refused:
        c.accept_quote(quote.quote_id, new_id("osl"))
    assert refused.value.code == ErrorCode.INVALID_QUOTE
    assert len(emu.executions("osl")) == executed + 1


@pytest.mark.parametrize("venue", VENUES)
def test_an_expired_quote_is_refused_permanently(emu, venue):
    emu.set_quote_ttl(0.3)
    c, cid = client(emu, venue), new_id(venue)
    quote = c.request_quote("ETH/USD", "sell", 3 * 10**18, 18, cid)
    executed = len(emu.executions(venue))
    time.sleep(0.45)
    with pytest.raises(PermanentError) as refused:
        c.accept_quote(quote.quote_id, cid)
    assert refused.value.code == ErrorCode.QUOTE_EXPIRED and not refused.value.transient
    assert len(emu.executions(venue)) == executed
    with pytest.raises(PermanentError) as unknown:
        c.order_status(cid)
    assert unknown.value.code == ErrorCode.UNKNOWN_ORDER


# ---- faults -----------------------------------------------------------------------------------------


@pytest.mark.faults
@pytest.mark.parametrize("venue", VENUES)
def test_a_rate_limit_is_transient_with_retry_after(emu, venue):
    c = client(emu, venue)
    emu.fail_next("rate_limit", venue=venue, retry_after=3)
    with pytest.raises(TransientError) as limited:
        c.request_quote("BTC/USD", "sell", SATOSHI, 8, new_id(venue))
    assert limited.value.code == ErrorCode.RATE_LIMITED and limited.value.transient
    assert limited.value.http_status == 429 and limited.value.retry_after == 3.0
    assert c.request_quote("BTC/USD", "sell", SATOSHI, 8, new_id(venue)).price > 0


@pytest.mark.faults
@pytest.mark.parametrize("kind", ["timeout", "indeterminate"])
@pytest.mark.parametrize("venue", VENUES)
def test_a_lost_answer_on_accept_is_indeterminate_and_resolved_by_the_client_id(emu, venue, kind):
    c, cid = client(emu, venue), new_id(venue)
    quote = c.request_quote("BTC/USD", "sell", 40_000_000, 8, cid)
    executed = len(emu.executions(venue))
    emu.fail_next(kind, venue=venue, path=ACCEPT_PATH[venue], hang=0.8)

    started = time.monotonic()
    with pytest.raises(IndeterminateResult) as lost:
        c.accept_quote(quote.quote_id, cid)
    assert time.monotonic() - started < 0.8  # our read timeout, not the server's hang
    assert lost.value.transient and lost.value.idempotency_key == cid

    resolved = c.order_status(cid)  # the venue did it: the answer was lost, not the trade
    assert resolved.status == OrderStatus.FILLED and resolved.filled_base_units == 40_000_000

    again = c.accept_quote(quote.quote_id, cid)  # a retry with the same client id is the same trade
    assert again.order_id == resolved.order_id and again.fills == resolved.fills
    assert len(emu.executions(venue)) == executed + 1


@pytest.mark.faults
@pytest.mark.parametrize("venue, venue_code", [("hashkey", "-1006"), ("osl", "INDETERMINATE")])
def test_an_outcome_the_venue_itself_calls_unknown_is_indeterminate(emu, venue, venue_code):
    c, cid = client(emu, venue), new_id(venue)
    quote = c.request_quote("BTC/USD", "sell", SATOSHI, 8, cid)
    executed = len(emu.executions(venue))
    emu.fail_next("reported_indeterminate", venue=venue, path=ACCEPT_PATH[venue])
    with pytest.raises(IndeterminateResult) as unsure:
        c.accept_quote(quote.quote_id, cid)
    assert unsure.value.venue_code == venue_code and unsure.value.idempotency_key == cid
    assert c.order_status(cid).status == OrderStatus.FILLED
    assert len(emu.executions(venue)) == executed + 1


@pytest.mark.faults
@pytest.mark.parametrize("venue", VENUES)
def test_a_timeout_before_the_venue_acted_leaves_no_trade_and_the_same_id_executes_once(emu, venue):
    c, cid = client(emu, venue), new_id(venue)
    quote = c.request_quote("BTC/USD", "sell", SATOSHI, 8, cid)
    executed = len(emu.executions(venue))
    emu.fail_next("timeout", venue=venue, path=ACCEPT_PATH[venue], hang=0.6, processed=False)
    with pytest.raises(IndeterminateResult):
        c.accept_quote(quote.quote_id, cid)
    with pytest.raises(PermanentError) as unknown:
        c.order_status(cid)
    assert unknown.value.code == ErrorCode.UNKNOWN_ORDER
    assert c.accept_quote(quote.quote_id, cid).status == OrderStatus.FILLED
    assert c.accept_quote(quote.quote_id, cid).status == OrderStatus.FILLED
    assert len(emu.executions(venue)) == executed + 1


@pytest.mark.faults
@pytest.mark.parametrize("venue", VENUES)
def test_a_gateway_error_is_indeterminate_on_accept_and_transient_on_a_read(emu, venue):
    c, cid = client(emu, venue), new_id(venue)
    quote = c.request_quote("BTC/USD", "sell", SATOSHI, 8, cid)
    emu.fail_next("server_error", venue=venue, path=ACCEPT_PATH[venue])
    with pytest.raises(IndeterminateResult) as unsure:
        c.accept_quote(quote.quote_id, cid)
    assert unsure.value.http_status == 503
    emu.fail_next("server_error", venue=venue)
    with pytest.raises(TransientError) as read_failed:
        c.order_status(cid)
    assert read_failed.value.code == ErrorCode.SERVER_ERROR and not isinstance(read_failed.value, IndeterminateResult)


@pytest.mark.faults
@pytest.mark.parametrize("venue", VENUES)
def test_a_partial_fill_is_reported(emu, venue):
    c, cid = client(emu, venue), new_id(venue)
    quote = c.request_quote("LTC/USD", "sell", 5 * SATOSHI, 8, cid)
    emu.fail_next("partial_fill", venue=venue, ratio=0.4)
    order = c.accept_quote(quote.quote_id, cid)
    status = c.order_status(cid)
    for o in (order, status):
        assert o.status == OrderStatus.PARTIALLY_FILLED and o.final
        assert (o.requested_base_units, o.filled_base_units, o.unfilled_base_units) == (5 * SATOSHI, 2 * SATOSHI,
                                                                                     3 * SATOSHI)
        assert sum(f.quantity for f in o.fills) == 2 * SATOSHI and o.fees > 0


@pytest.mark.faults
def test_a_lost_answer_on_a_read_still_leaves_a_redacted_record(emu):
    records = []
    c, cid = client(emu, "hashkey", recorder=records.append), new_id("hashkey")
    emu.fail_next("timeout", venue="hashkey", path="get-rfq-history", hang=0.6)
    with pytest.raises(TransientError) as lost:
        c.order_status(cid)
    assert lost.value.code == ErrorCode.TIMEOUT and not isinstance(lost.value, IndeterminateResult)
    record = records[-1]
    assert record.response_status is None and "timed out" in record.error
    assert "signature=" + REDACTED in record.url and record.verify()


# ---- deposits and withdrawals -----------------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUES)
def test_a_deposit_from_a_sender_not_whitelisted_is_held_until_released(emu, venue):
    c = client(emu, venue)
    address = c.deposit_address("BTC", "bitcoin")
    assert address.startswith("bc1q") and c.deposit_address("BTC", "bitcoin") == address
    assert c.deposit_address("ETH", "ethereum").startswith("0x")
    txid = uuid.uuid4().hex * 2
    emu.add_deposit(venue, asset="BTC", chain="bitcoin", txid=txid, amount="2.5", sender="bc1q-seized-wallet")

    held = c.deposit_status(txid)
    assert held.status == DepositStatus.HELD_UNVERIFIED and held.reason == "sender not whitelisted"
    assert held.amount_base_units(8) == 250_000_000

    emu.whitelist_sender(venue, "bc1q-seized-wallet")
    emu.release_deposit(venue, txid)
    assert c.deposit_status(txid).status == DepositStatus.CREDITED
    unseen = c.deposit_status("f" * 64)
    assert unseen.status == DepositStatus.PENDING and unseen.venue_status == "NOT_SEEN"


@pytest.mark.parametrize("venue", VENUES)
def test_withdrawals_go_only_to_whitelisted_addresses_and_only_once(emu, venue):
    c, ref = client(emu, venue), new_id(venue)
    address = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    with pytest.raises(PermanentError) as refused:
        c.withdraw("BTC", "bitcoin", address, SATOSHI, ref)
    assert refused.value.code == ErrorCode.ADDRESS_NOT_WHITELISTED
    emu.whitelist_withdrawal_address(venue, address)
    before = emu.balance(venue, "BTC")
    first = c.withdraw("BTC", "bitcoin", address, SATOSHI, ref)
    second = c.withdraw("BTC", "bitcoin", address, SATOSHI, ref)
    assert first.status == WithdrawalStatus.PENDING and second.withdrawal_id == first.withdrawal_id
    assert emu.balance(venue, "BTC") == before - 1


# ---- evidence ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUES)
def test_the_recorder_gets_redacted_messages_with_a_sha256(emu, venue):
    records, spy = [], SpySession()
    c, cid = client(emu, venue, recorder=records.append, session=spy), new_id(venue)
    quote = c.request_quote("BTC/USD", "sell", SATOSHI, 8, cid)
    c.accept_quote(quote.quote_id, cid)
    with pytest.raises(PermanentError):
        c.order_status(new_id(venue))

    creds = emu.credentials[venue]
    wire_signatures = [
        (r.headers.get("ACCESS-SIGN") or r.url.rsplit("signature=", 1)[1]) for r in spy.sent
    ]
    assert len(records) == len(spy.sent) >= 3 and all(wire_signatures)
    for record in records:
        text = json.dumps(record.__dict__)
        for secret in (creds.api_key, creds.secret, creds.passphrase, *wire_signatures):
            if secret:
                assert secret not in text
        canonical = json.dumps({k: record.__dict__[k] for k in ("party", "method", "url", "request_headers",
                                                                "request_body", "response_status", "response_body")},
                               sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record.sha256 == hashlib.sha256(canonical.encode()).hexdigest()
        assert record.party == venue and record.url.startswith("http://127.0.0.1:")
        assert record.elapsed_ms > 0 and datetime.fromisoformat(record.started_at).tzinfo is not None
        if venue == "hashkey":
            assert record.url.endswith("signature=" + REDACTED)
            assert record.request_headers["X-HK-APIKEY"] == REDACTED
        else:
            assert {record.request_headers[h] for h in ("ACCESS-KEY", "ACCESS-SIGN", "ACCESS-PASSPHRASE")} == {REDACTED}
    accept = next(r for r in records if r.operation in {"accept_quote", "trade"})
    assert accept.idempotency_key == cid and accept.response_status == 200
    # The unknown order was asked about, and that question is on the record too.
    assert records[-1].operation in {"rfq_history", "trade_query"}


# ---- the replayed market ----------------------------------------------------------------------------


def test_quotes_follow_the_replayed_market_within_spread_and_impact(emu):
    closes, volume, sigma_day = csv_day()
    quantity = 25.0  # BTC
    hk, osl = client(emu, "hashkey"), client(emu, "osl")
    best = {}
    for minute in (0, 720, 1439):
        emu.set_market_minute(minute)
        mid = closes[minute]
        quotes = hk.request_quotes("BTC/USD", "sell", int(quantity * SATOSHI), 8, new_id("hashkey"))
        assert len(quotes) == 3
        for q in quotes:
            lp = next(lp for lp in LIQUIDITY_PROVIDERS if lp.name == q.provider)
            impact = float(lp.impact_y) * sigma_day * math.sqrt(quantity / (volume * float(LIQUIDITY_MULTIPLE)))
            highest = mid * (1 - float(lp.half_spread_bps) / 1e4 - impact)
            lowest = mid * (1 - float(lp.half_spread_bps + lp.noise_bps) / 1e4 - impact) - 0.01
            assert lowest - 1e-6 <= float(q.price) <= highest + 1e-6, (minute, lp.name, q.price, lowest, highest)
        widest = max(float(lp.half_spread_bps + lp.noise_bps) / 1e4 + float(lp.impact_y) * sigma_day *
                     math.sqrt(quantity / (volume * float(LIQUIDITY_MULTIPLE))) for lp in LIQUIDITY_PROVIDERS)
        osl_price = float(osl.request_quote("BTC/USD", "sell", int(quantity * SATOSHI), 8, "mkt").price)
        assert mid * (1 - widest) - 0.01 <= osl_price < mid
        bought = float(osl.request_quote("BTC/USD", "buy", int(quantity * SATOSHI), 8, "mkt").price)
        assert mid < bought <= mid * (1 + widest) + 0.01
        best[minute] = float(quotes[0].price)
    # The quotes move with the replayed day (about -5% from midnight to the last minute).
    assert best[1439] / best[0] == pytest.approx(closes[1439] / closes[0], rel=5e-4)


def test_the_synthetic_eth_and_ltc_paths_are_calibrated_to_the_btc_day(emu):
    market = emu.market
    for asset, ratio in (("ETH", 1.35), ("LTC", 1.6)):
        assert float(market.daily_sigma(asset) / market.daily_sigma("BTC")) == pytest.approx(ratio, rel=0.1)
        assert market.mid(asset, 0) > 0 and market.daily_volume(asset) > 0


def test_the_emulator_adds_the_latency_it_is_asked_for(emu):
    records = []
    c = client(emu, "osl", recorder=records.append)
    emu.set_latency(0.15)
    c.request_quote("BTC/USD", "sell", SATOSHI, 8, "slow")
    assert records[-1].elapsed_ms >= 150


def test_the_emulator_listens_on_localhost_only(emu):
    assert emu.base_url.startswith("http://127.0.0.1:")
    assert emu._server.server_address[0] == "127.0.0.1"
    assert emu.hashkey_url.startswith(emu.base_url) and emu.osl_url.startswith(emu.base_url)


def test_errors_say_whether_to_retry():
    assert TransientError("x", party="osl", code=ErrorCode.RATE_LIMITED).transient
    assert not PermanentError("x", party="osl", code=ErrorCode.QUOTE_EXPIRED).transient
    lost = IndeterminateResult("x", party="hashkey", operation="accept_quote", idempotency_key="k")
    assert isinstance(lost, TransientError) and isinstance(lost, CounterpartyError)
    assert lost.transient and lost.code == ErrorCode.INDETERMINATE


def test_a_malformed_number_from_a_venue_is_an_error_not_a_zero():
    from decimal import Decimal

    from counterparties.errors import ErrorCode, PermanentError
    from counterparties.exchanges.base import venue_decimal

    assert venue_decimal("62100.5", party="osl") == Decimal("62100.5")
    assert venue_decimal(None, party="osl") == 0 and venue_decimal("", party="osl", default=None) is None
    for bad in ("abc", "NaN", "Infinity", "1,000"):
        with pytest.raises(PermanentError) as exc:
            venue_decimal(bad, party="osl")
        assert exc.value.code == ErrorCode.BAD_RESPONSE
