"""The Ethereum adapter against the EVM emulator, over loopback JSON-RPC: what the portal reads is what
the chain did, exactly, in wei and token base units."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from counterparties.chains.base import AssetRef, ChainAdapter, TxState
from counterparties.chains.evm import EvmChain
from counterparties.errors import PermanentError, TransientError
from emulators.chains import ChainControl
from emulators.evm import CONTRACT_SOURCE, FINALITY_DEPTH, start_evm_node, usdt_contract

ETHER = 10**18
USDT_UNIT = 10**6


@pytest.fixture(scope="module")
def node():
    node = start_evm_node()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def chain(node):
    return EvmChain(node.url, timeout=5)


@pytest.fixture(scope="module")
def eth(node):
    return node.assets()[0]


@pytest.fixture(scope="module")
def usdt(node):
    return node.assets()[1]


def test_the_emulator_and_adapter_implement_the_interfaces(node, chain):
    assert isinstance(node, ChainControl)
    assert isinstance(chain, ChainAdapter)
    assert [(a.symbol, a.decimals, bool(a.contract)) for a in node.assets()] == [("ETH", 18, False),
                                                                                   ("USDT", 6, True)]


def test_the_token_is_compiled_from_the_committed_source():
    import vyper

    assert usdt_contract()["bytecode"] == vyper.compile_code(CONTRACT_SOURCE.read_text(),
                                                             output_formats=["bytecode"])["bytecode"]


def test_it_reads_eth_and_usdt_balances_exactly(node, chain, eth, usdt):
    holder = node.new_address()
    node.fund(holder, eth, 3 * ETHER + 1)  # one wei more: floats would lose it
    node.fund(holder, usdt, 123_456_789_012)

    assert chain.balance(holder, eth).amount == 3 * ETHER + 1
    usdt_balance = chain.balance(holder.lower(), usdt)
    assert usdt_balance.amount == 123_456_789_012
    assert usdt_balance.height == chain.tip_height() == node.tip()


def test_it_lists_transfers_to_an_address_after_a_height(node, chain, eth, usdt):
    holder = node.new_address()
    first_eth = node.fund(holder, eth, 5 * ETHER)
    node.fund(holder, usdt, 70 * USDT_UNIT)
    after = node.tip()
    second_usdt = node.fund(holder, usdt, 30 * USDT_UNIT)

    eth_in = chain.transfers_to(holder, eth)
    assert [(t.txid, t.amount, t.to_address) for t in eth_in if t.txid == first_eth] == [(first_eth, 5 * ETHER, holder)]
    assert sum(t.amount for t in chain.transfers_to(holder, usdt)) == 100 * USDT_UNIT
    later = chain.transfers_to(holder, usdt, since_height=after)
    assert [(t.txid, t.amount, t.height) for t in later] == [(second_usdt, 30 * USDT_UNIT, after + 1)]
    assert later[0].block_hash == chain.transaction(second_usdt, usdt).block_hash


def test_an_eth_transfer_is_pending_then_confirmed_with_its_exact_fee(node, chain, eth):
    sender, receiver = node.new_address(), node.new_address()
    node.fund(sender, eth, 2 * ETHER)

    sent = node.send(sender, receiver, eth, ETHER, subtract_fee=True)
    assert sent.amount + sent.fee == ETHER
    assert chain.transaction(sent.txid, eth).state == TxState.PENDING

    height = node.mine()
    status = chain.transaction(sent.txid, eth)
    assert (status.state, status.confirmations, status.height, status.fee) == (TxState.CONFIRMED, 1, height, sent.fee)
    assert [(t.from_address, t.to_address, t.amount) for t in status.transfers] == [(sender, receiver, sent.amount)]
    assert chain.balance(receiver, eth).amount == sent.amount
    assert chain.balance(sender, eth).amount == ETHER  # 2 ETH - (amount + fee)

    node.mine(2)
    assert chain.transaction(sent.txid, eth).confirmations == 3


def test_a_usdt_transfer_reports_the_token_movement_and_the_eth_fee(node, chain, usdt):
    sender, receiver = node.new_address(), node.new_address()
    node.fund(sender, usdt, 50 * USDT_UNIT)
    sent = node.send(sender, receiver, usdt, 20 * USDT_UNIT)
    node.mine()

    status = chain.transaction(sent.txid, usdt)
    assert status.state == TxState.CONFIRMED
    assert status.fee == sent.fee > 0
    assert [(t.from_address, t.to_address, t.amount) for t in status.transfers] == [(sender, receiver, 20 * USDT_UNIT)]
    assert chain.balance(sender, usdt).amount == 30 * USDT_UNIT


def test_a_token_transfer_above_the_balance_fails_on_chain_and_still_costs_gas(node, chain, eth, usdt):
    sender, receiver = node.new_address(), node.new_address()
    node.fund(sender, usdt, 10 * USDT_UNIT)
    eth_before = chain.balance(sender, eth).amount

    sent = node.send(sender, receiver, usdt, 11 * USDT_UNIT)
    node.mine()

    status = chain.transaction(sent.txid, usdt)
    assert (status.state, status.transfers, sent.amount) == (TxState.FAILED, (), 0)
    assert status.fee == sent.fee > 0
    assert chain.balance(sender, usdt).amount == 10 * USDT_UNIT
    assert chain.balance(sender, eth).amount == eth_before - status.fee
    assert chain.transfers_to(receiver, usdt) == []


def test_an_unknown_transaction_is_unknown(chain, eth):
    assert chain.transaction("0x" + "ab" * 32, eth).state == TxState.UNKNOWN


def test_a_transaction_becomes_finalized_below_the_finalized_block(node, chain, eth):
    holder = node.new_address()
    txid = node.fund(holder, eth, ETHER)
    assert chain.transaction(txid, eth).finalized is False

    node.mine(FINALITY_DEPTH - 1)
    assert chain.transaction(txid, eth).finalized is False
    node.mine()
    status = chain.transaction(txid, eth)
    assert (status.finalized, status.confirmations) == (True, FINALITY_DEPTH + 1)


def test_a_reorg_removes_a_confirmed_transfer(node, chain, eth, usdt):
    holder = node.new_address()
    txid = node.fund(holder, usdt, 5 * USDT_UNIT)
    node.mine()
    seen = chain.transaction(txid, usdt)
    assert (seen.state, seen.confirmations) == (TxState.CONFIRMED, 2)

    node.reorg(2)

    assert chain.transaction(txid, usdt, seen_block_hash=seen.block_hash).state == TxState.REORGED
    assert chain.transaction(txid, usdt).state == TxState.UNKNOWN  # without the hint it is merely unknown
    assert chain.balance(holder, usdt).amount == 0
    assert chain.transfers_to(holder, usdt) == []
    assert chain.tip_height() == seen.height + 2  # the new branch is longer than the old one


@pytest.mark.parametrize("address", [
    "0x52908400098527886E0F7030069857D2E4169EE7".lower()[:-1],  # too short
    "0x52908400098527886E0F7030069857D2E4169Ee7",  # mixed case with a wrong checksum
    "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8",  # a TRON address
])
def test_it_refuses_an_address_that_is_not_a_valid_ethereum_address(chain, eth, address):
    with pytest.raises(PermanentError) as error:
        chain.balance(address, eth)
    assert error.value.code == "VALIDATION"


def test_it_refuses_an_asset_of_another_chain(chain):
    with pytest.raises(PermanentError):
        chain.balance("0x" + "11" * 20, AssetRef("TRX", "tron", 6))


def test_a_stopped_node_is_a_transient_error(eth):
    node = start_evm_node()
    chain = EvmChain(node.url, timeout=2)
    assert chain.tip_height() >= 1
    node.stop()

    started = time.monotonic()
    with pytest.raises(TransientError) as error:
        chain.balance("0x" + "11" * 20, eth)
    assert error.value.code == "CONNECTION"
    assert time.monotonic() - started < 2  # no hidden retries inside web3


def test_a_node_that_answers_garbage_is_a_permanent_error(eth):
    # A server that speaks HTTP but not JSON-RPC (a misconfigured URL pointing at a web page).
    class Page(BaseHTTPRequestHandler):
        def do_POST(self):
            body = b"<html>not a node</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PermanentError) as error:
            EvmChain(f"http://127.0.0.1:{server.server_address[1]}").tip_height()
        assert error.value.code == "BAD_RESPONSE"
    finally:
        server.shutdown()
        server.server_close()


def test_json_rpc_errors_have_the_standard_shape(node):
    answer = requests.post(node.url, json={"jsonrpc": "2.0", "id": 7, "method": "eth_mine", "params": []},
                           timeout=5).json()
    assert answer == {"jsonrpc": "2.0", "id": 7,
                      "error": {"code": -32601, "message": "the method eth_mine does not exist/is not available"}}
    answer = requests.post(node.url, data=b"{not json", timeout=5).json()
    assert answer["error"]["code"] == -32700


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_line_node_is_driven_through_its_control_api(tmp_path):
    credentials_file = tmp_path / "evm.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.evm", "--port", str(_free_port()), "--control-port", str(_free_port()),
         "--credentials-file", str(credentials_file)],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not credentials_file.exists() or not credentials_file.read_text():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.1)
        assert credentials_file.stat().st_mode & 0o777 == 0o600
        creds = json.loads(credentials_file.read_text())
        control = creds["control_url"]

        def post(action, body=None, token=creds["token"]):
            return requests.post(f"{control}/{action}", json=body or {}, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})

        assert post("new_address", token="wrong").status_code == 401
        address = post("new_address").json()["result"]
        post("fund", {"address": address, "asset": "USDT", "amount": 42_000_000}).raise_for_status()
        usdt = AssetRef("USDT", "ethereum", 6, contract=creds["usdt_contract"])
        assert EvmChain(creds["url"]).balance(address, usdt).amount == 42_000_000
        assert post("fund", {"address": address, "asset": "DOGE", "amount": 1}).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
