"""The TRON adapter against the TronGrid-shaped emulator, over loopback: exact sun and USDT base units,
transaction states, solidification and the API key."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from counterparties.chains.base import AssetRef, ChainAdapter, TxState
from counterparties.chains.tron import TronGridChain
from counterparties.errors import PermanentError, TransientError
from emulators.chains import ChainControl
from emulators.tron import SOLIDIFY_DEPTH, TRC20_TRANSFER_FEE, TRX_TRANSFER_FEE, start_tron_emulator

TRX = 10**6
USDT_UNIT = 10**6
API_KEY = "test-key-not-a-secret"


@pytest.fixture(scope="module")
def ledger():
    ledger = start_tron_emulator(api_key=API_KEY)
    yield ledger
    ledger.stop()


@pytest.fixture(scope="module")
def chain(ledger):
    return TronGridChain(ledger.url, api_key=API_KEY, timeout=5)


@pytest.fixture(scope="module")
def trx(ledger):
    return ledger.assets()[0]


@pytest.fixture(scope="module")
def usdt(ledger):
    return ledger.assets()[1]


def test_the_emulator_and_adapter_implement_the_interfaces(ledger, chain):
    assert isinstance(ledger, ChainControl)
    assert isinstance(chain, ChainAdapter)
    assert [(a.symbol, a.decimals, a.contract[:1]) for a in ledger.assets()] == [("TRX", 6, ""), ("USDT", 6, "T")]


def test_it_reads_trx_and_usdt_balances_exactly(ledger, chain, trx, usdt):
    holder = ledger.new_address()
    assert chain.balance(holder, usdt).amount == 0  # never activated

    ledger.fund(holder, trx, 7 * TRX + 1)
    assert chain.balance(holder, trx).amount == 7 * TRX + 1
    ledger.fund(holder, usdt, 123_456_789_012_345)

    balance = chain.balance(holder, usdt)
    assert balance.amount == 123_456_789_012_345
    assert balance.height == chain.tip_height() == ledger.tip().number


def test_it_lists_transfers_to_an_address_after_a_height(ledger, chain, trx, usdt):
    holder = ledger.new_address()
    first = ledger.fund(holder, usdt, 70 * USDT_UNIT)
    after = ledger.tip().number
    second = ledger.fund(holder, usdt, 30 * USDT_UNIT)

    assert [(t.txid, t.amount, t.height) for t in chain.transfers_to(holder, usdt)] == [
        (first, 70 * USDT_UNIT, after), (second, 30 * USDT_UNIT, after + 1)]
    later = chain.transfers_to(holder, usdt, since_height=after)
    assert [t.txid for t in later] == [second]
    assert later[0].block_hash == chain.transaction(second, usdt).block_hash
    # The fee allowance that came with the first token payment is a TRX transfer to the holder.
    assert [t.amount for t in chain.transfers_to(holder, trx)] == [100 * TRX]


def test_a_trx_transfer_is_pending_then_confirmed_with_its_exact_fee(ledger, chain, trx):
    sender, receiver = ledger.new_address(), ledger.new_address()
    ledger.fund(sender, trx, 10 * TRX)

    sent = ledger.send(sender, receiver, trx, 4 * TRX, subtract_fee=True)
    assert (sent.amount, sent.fee) == (4 * TRX - TRX_TRANSFER_FEE, TRX_TRANSFER_FEE)
    assert chain.transaction(sent.txid, trx).state == TxState.PENDING

    height = ledger.mine()
    status = chain.transaction(sent.txid, trx)
    assert (status.state, status.confirmations, status.height, status.fee) == (TxState.CONFIRMED, 1, height,
                                                                                TRX_TRANSFER_FEE)
    assert [(t.from_address, t.to_address, t.amount) for t in status.transfers] == [(sender, receiver, sent.amount)]
    assert chain.balance(sender, trx).amount == 6 * TRX
    assert chain.balance(receiver, trx).amount == sent.amount


def test_a_usdt_transfer_above_the_balance_fails_and_still_burns_its_fee(ledger, chain, trx, usdt):
    sender, receiver = ledger.new_address(), ledger.new_address()
    ledger.fund(sender, usdt, 10 * USDT_UNIT)
    trx_before = chain.balance(sender, trx).amount

    ok = ledger.send(sender, receiver, usdt, 4 * USDT_UNIT)
    too_much = ledger.send(sender, receiver, usdt, 7 * USDT_UNIT)
    assert (ok.amount, too_much.amount) == (4 * USDT_UNIT, 0)
    ledger.mine()

    confirmed, failed = chain.transaction(ok.txid, usdt), chain.transaction(too_much.txid, usdt)
    assert confirmed.state == TxState.CONFIRMED
    assert [(t.from_address, t.to_address, t.amount) for t in confirmed.transfers] == [(sender, receiver, 4 * USDT_UNIT)]
    assert (failed.state, failed.transfers, failed.fee) == (TxState.FAILED, (), TRC20_TRANSFER_FEE)
    assert chain.balance(sender, usdt).amount == 6 * USDT_UNIT
    assert chain.balance(sender, trx).amount == trx_before - 2 * TRC20_TRANSFER_FEE


def test_an_unknown_transaction_is_unknown(chain, trx):
    assert chain.transaction("ab" * 32, trx).state == TxState.UNKNOWN


def test_a_transaction_is_finalized_once_its_block_is_solidified(ledger, chain, trx):
    txid = ledger.fund(ledger.new_address(), trx, TRX)
    ledger.mine(SOLIDIFY_DEPTH - 1)
    assert chain.transaction(txid, trx).finalized is False
    ledger.mine()
    status = chain.transaction(txid, trx)
    assert (status.finalized, status.confirmations) == (True, SOLIDIFY_DEPTH + 1)


def test_a_reorg_removes_a_confirmed_transfer(ledger, chain, usdt):
    holder = ledger.new_address()
    txid = ledger.fund(holder, usdt, 5 * USDT_UNIT)
    seen = chain.transaction(txid, usdt)
    assert seen.state == TxState.CONFIRMED

    ledger.reorg(1)

    assert chain.transaction(txid, usdt, seen_block_hash=seen.block_hash).state == TxState.REORGED
    assert chain.transaction(txid, usdt).state == TxState.UNKNOWN
    assert chain.balance(holder, usdt).amount == 0
    assert chain.transfers_to(holder, usdt) == []


@pytest.mark.parametrize("address", [
    "TJRabPrwbZy45sbavfcjinPJC18kjpRTv9",  # one character off: the checksum fails
    "0x52908400098527886E0F7030069857D2E4169EE7",  # an Ethereum address
    "",
])
def test_it_refuses_an_address_that_is_not_a_valid_tron_address(chain, trx, address):
    with pytest.raises(PermanentError) as error:
        chain.balance(address, trx)
    assert error.value.code == "VALIDATION"


def test_a_wrong_api_key_is_a_permanent_error(ledger, trx):
    for key in ("wrong", None):
        with pytest.raises(PermanentError) as error:
            TronGridChain(ledger.url, api_key=key).tip_height()
        assert (error.value.code, error.value.http_status) == ("AUTH_FAILED", 401)


def test_a_stopped_service_is_a_transient_error(trx):
    ledger = start_tron_emulator()
    chain = TronGridChain(ledger.url, timeout=2)
    assert chain.tip_height() == 0
    ledger.stop()
    with pytest.raises(TransientError) as error:
        chain.tip_height()
    assert error.value.code == "CONNECTION"


def test_the_api_pages_long_histories(ledger, chain, trx):
    holder = ledger.new_address()
    for _ in range(3):
        ledger.send(ledger.treasury, holder, trx, TRX)
    ledger.mine()
    answer = requests.get(f"{ledger.url}/v1/accounts/{holder}/transactions", params={"only_to": "true", "limit": 2},
                          headers={"TRON-PRO-API-KEY": API_KEY}, timeout=5).json()
    assert (len(answer["data"]), bool(answer["meta"].get("fingerprint"))) == (2, True)
    assert len(chain.transfers_to(holder, trx)) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_line_service_is_driven_through_its_control_api(tmp_path):
    credentials_file = tmp_path / "tron.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.tron", "--port", str(_free_port()), "--credentials-file",
         str(credentials_file), "--block-time", "0.2"],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not credentials_file.exists() or not credentials_file.read_text():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.1)
        assert credentials_file.stat().st_mode & 0o777 == 0o600
        creds = json.loads(credentials_file.read_text())

        def post(action, body=None, token=creds["token"]):
            return requests.post(f"{creds['control_url']}/{action}", json=body or {}, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})

        assert post("new_address", token="wrong").status_code == 401
        address = post("new_address").json()["result"]
        post("fund", {"address": address, "asset": "USDT", "amount": "42000000"}).raise_for_status()
        chain = TronGridChain(creds["url"], api_key=creds["api_key"])
        usdt = AssetRef("USDT", "tron", 6, contract=creds["usdt_contract"])
        assert chain.balance(address, usdt).amount == 42_000_000
        height = chain.tip_height()
        time.sleep(0.6)
        assert chain.tip_height() > height  # blocks keep coming on their own
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
