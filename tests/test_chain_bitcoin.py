"""The Bitcoin-family adapter against a real Litecoin Core node in regtest, over loopback.

One node serves the module (starting one takes a few seconds); each test uses fresh addresses, so the
tests do not depend on one another's coins. Faults that a node cannot be made to produce (garbage, a hang)
come from a tiny local HTTP server.
"""

import base64
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from counterparties.chains.base import AssetRef, ChainAdapter, TxState
from counterparties.chains.bitcoin import BitcoinRpcChain, to_base_units, to_coins
from counterparties.errors import ErrorCode, PermanentError, TransientError
from emulators.chains import ChainControl
from emulators.litecoin import LTC, ControlServer, RemoteLitecoinRegtest, start_litecoin_regtest

LITOSHI = 100_000_000


@pytest.fixture(scope="module")
def node():
    regtest = start_litecoin_regtest()
    yield regtest
    regtest.stop()


@pytest.fixture(scope="module")
def chain(node):
    adapter = BitcoinRpcChain(node.url, chain="litecoin", auth=node.auth)
    yield adapter
    adapter.close()  # else the node's shutdown waits for this kept-alive connection


def funded(node, amount):
    address = node.new_address()
    node.fund(address, LTC, amount)
    return address


def wallet_fee(node, txid):
    # The wallet reports its own fee as a negative number of coins.
    return -to_base_units(node.wallet.call("gettransaction", txid)["fee"])


def test_the_emulator_and_the_adapter_implement_the_interfaces(node, chain):
    assert isinstance(node, ChainControl) and isinstance(chain, ChainAdapter)
    assert node.assets() == [LTC] and node.new_address().startswith("rltc1q")


def test_it_reads_the_balance_of_an_address_the_node_does_not_watch_exactly(node, chain):
    address = funded(node, 12_345_678)  # 0.12345678 LTC: every decimal place used
    balance = chain.balance(address, LTC)
    assert balance.amount == 12_345_678
    assert balance.height == chain.tip_height()
    assert chain.balance(node.new_address(), LTC).amount == 0


def test_it_lists_transfers_above_a_height_and_in_the_mempool(node, chain):
    target, sender = node.new_address(), funded(node, 3 * LITOSHI)
    before = chain.tip_height()
    first = node.fund(target, LTC, LITOSHI)
    second = node.fund(target, LTC, 2 * LITOSHI)
    pending = node.send(sender, target, LTC, 50_000_000)

    everything = {t.txid: t for t in chain.transfers_to(target, LTC, since_height=before)}
    assert set(everything) == {first, second, pending.txid}
    assert (everything[first].amount, everything[first].height) == (LITOSHI, before + 1)
    assert (everything[second].amount, everything[second].height) == (2 * LITOSHI, before + 2)
    assert everything[second].block_hash == node.node.call("getblockhash", before + 2)
    assert everything[pending.txid].height is None and everything[pending.txid].from_address == sender
    assert everything[pending.txid].amount == 50_000_000

    later = chain.transfers_to(target, LTC, since_height=before + 1)
    assert {t.txid for t in later} == {second, pending.txid}


def test_a_transaction_goes_from_pending_to_confirmed_and_counts_confirmations(node, chain):
    sender, receiver = funded(node, LITOSHI), node.new_address()
    sent = node.send(sender, receiver, LTC, 12_345_678)

    pending = chain.transaction(sent.txid, LTC)
    assert pending.state == TxState.PENDING and pending.confirmations == 0 and pending.height is None

    height = node.mine(1)
    confirmed = chain.transaction(sent.txid, LTC)
    assert (confirmed.state, confirmed.confirmations, confirmed.height) == (TxState.CONFIRMED, 1, height)
    assert confirmed.block_hash == node.node.call("getblockhash", height)
    assert not confirmed.finalized
    node.mine(2)
    assert chain.transaction(sent.txid, LTC, seen_block_hash=confirmed.block_hash).confirmations == 3

    paid = {t.to_address: t.amount for t in confirmed.transfers}
    assert paid[receiver] == 12_345_678
    assert {t.from_address for t in confirmed.transfers} == {sender}


def test_the_fee_is_inputs_minus_outputs_and_matches_the_wallet(node, chain):
    sender, receiver = funded(node, LITOSHI), node.new_address()
    sent = node.send(sender, receiver, LTC, 30_000_000)
    status = chain.transaction(sent.txid, LTC)
    assert status.fee == sent.fee == wallet_fee(node, sent.txid) > 0
    # Nothing lost: what the sender had = what arrived + change + fee.
    assert sum(t.amount for t in status.transfers) + status.fee == LITOSHI


def test_subtracting_the_fee_empties_the_address(node, chain):
    sender, receiver = funded(node, 12_345_678), node.new_address()
    sent = node.send(sender, receiver, LTC, 12_345_678, subtract_fee=True)
    node.mine(1)
    assert sent.amount == 12_345_678 - sent.fee
    assert chain.balance(sender, LTC).amount == 0
    assert chain.balance(receiver, LTC).amount == sent.amount


def test_a_random_txid_is_unknown(chain):
    status = chain.transaction(secrets.token_hex(32), LTC)
    assert status.state == TxState.UNKNOWN and status.confirmations == 0


def test_a_reorg_makes_a_confirmed_transfer_vanish(node, chain):
    sender, receiver = funded(node, LITOSHI), node.new_address()
    sent = node.send(sender, receiver, LTC, 40_000_000)
    node.mine(1)
    confirmed = chain.transaction(sent.txid, LTC)
    assert confirmed.state == TxState.CONFIRMED
    tip = chain.tip_height()

    node.reorg(1)

    assert chain.tip_height() == tip + 1
    assert node.node.call("getblockheader", confirmed.block_hash)["confirmations"] == -1
    reorged = chain.transaction(sent.txid, LTC, seen_block_hash=confirmed.block_hash)
    assert reorged.state == TxState.REORGED and reorged.block_hash == confirmed.block_hash
    assert sent.txid not in node.node.call("getrawmempool")
    # The coins are back where they were, and more blocks do not bring the transfer back.
    node.mine(2)
    assert chain.transaction(sent.txid, LTC, seen_block_hash=confirmed.block_hash).state == TxState.REORGED
    assert chain.balance(sender, LTC).amount == LITOSHI
    assert chain.balance(receiver, LTC).amount == 0
    assert sent.txid not in {t.txid for t in chain.transfers_to(receiver, LTC, since_height=tip - 2)}


def test_a_seen_block_that_left_the_main_chain_marks_a_pending_transaction_reorged(node, chain):
    sender, receiver = funded(node, LITOSHI), node.new_address()
    funding_block = node.node.call("getbestblockhash")
    node.reorg(1)  # the funding is gone too: its block was the tip
    assert chain.balance(sender, LTC).amount == 0
    assert chain.transaction(secrets.token_hex(32), LTC, seen_block_hash=funding_block).state == TxState.REORGED
    assert chain.balance(receiver, LTC).amount == 0


def test_it_refuses_an_asset_of_another_chain_and_a_malformed_address_or_txid(node, chain):
    with pytest.raises(PermanentError, match="not the native coin"):
        chain.balance(node.new_address(), AssetRef("USDT", "ethereum", 6, "0x" + "1" * 40))
    with pytest.raises(PermanentError, match="not a litecoin address") as exc:
        chain.balance("rltc1q)#,addr(x", LTC)  # would smuggle descriptor syntax into scantxoutset
    assert exc.value.code == ErrorCode.VALIDATION
    with pytest.raises(PermanentError, match="scantxoutset") as exc:
        chain.balance("rltc1qnotanaddressatall0000000", LTC)
    assert exc.value.code == ErrorCode.VALIDATION
    with pytest.raises(PermanentError, match="not a transaction id"):
        chain.transaction("00" * 31, LTC)


def test_amounts_convert_exactly_and_refuse_what_does_not_fit():
    assert to_base_units(Decimal("0.12345678")) == 12_345_678
    assert to_base_units(Decimal("21000000.00000000")) == 2_100_000_000_000_000
    assert to_coins(12_345_678) == "0.12345678" and to_coins(1) == "0.00000001"
    with pytest.raises(PermanentError, match="more than 8 decimals"):
        to_base_units(Decimal("0.123456789"))
    with pytest.raises(PermanentError, match="not an exact number"):
        to_base_units(0.1)


@pytest.mark.security
def test_a_wrong_rpc_password_is_a_permanent_error_that_does_not_show_it(node):
    wrong = "not-the-password-" + secrets.token_hex(8)
    adapter = BitcoinRpcChain(node.url, chain="litecoin", auth=(node.user, wrong))
    with pytest.raises(PermanentError) as exc:
        adapter.tip_height()
    adapter.close()
    assert exc.value.code == ErrorCode.AUTH_FAILED and "getblockcount" in str(exc.value)
    for text in (str(exc.value), repr(exc.value), repr(adapter), repr(node)):
        assert wrong not in text and node.password not in text


# -- faults a real node will not produce on demand --

class FakeNode:
    """Answers every POST with the next scripted (status, body, delay); records the Authorization header."""

    def __init__(self):
        self.script, self.authorizations = [], []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.authorizations.append(self.headers.get("Authorization"))
                status, body, delay = fake.script.pop(0) if fake.script else (200, b"{}", 0)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def fake():
    server = FakeNode()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def rpc_error(code, message):
    return json.dumps({"result": None, "error": {"code": code, "message": message}, "id": 1}).encode()


@pytest.mark.faults
@pytest.mark.parametrize("status, body, error, code", [
    (200, b"<html>not json", PermanentError, ErrorCode.BAD_RESPONSE),
    (200, b'{"result": 1, "error": null, "id": 99}', PermanentError, ErrorCode.BAD_RESPONSE),
    (500, rpc_error(-8, "Invalid parameter"), PermanentError, ErrorCode.VALIDATION),
    (500, rpc_error(-28, "Loading block index..."), TransientError, ErrorCode.SERVER_ERROR),
    (503, b"Work queue depth exceeded", TransientError, ErrorCode.SERVER_ERROR),
    (502, b"<html>bad gateway</html>", TransientError, ErrorCode.SERVER_ERROR),
])
def test_node_answers_map_to_transient_or_permanent_errors(fake, status, body, error, code):
    fake.script.append((status, body, 0))
    with pytest.raises(error, match="getblockcount") as exc:
        BitcoinRpcChain(fake.url, auth=("user", "secret")).tip_height()
    assert exc.value.code == code


@pytest.mark.faults
def test_a_node_that_does_not_answer_in_time_is_transient(fake):
    fake.script.append((200, b'{"result": 1, "error": null, "id": 1}', 1.0))
    with pytest.raises(TransientError) as exc:
        BitcoinRpcChain(fake.url, auth=("user", "secret"), timeout=(1, 0.2)).tip_height()
    assert exc.value.code == ErrorCode.TIMEOUT


@pytest.mark.faults
def test_more_than_eight_decimals_from_the_node_is_refused(fake):
    fake.script.append((200, b'{"result": {"success": true, "height": 7, "total_amount": 0.123456789}, '
                             b'"error": null, "id": 1}', 0))
    with pytest.raises(PermanentError, match="more than 8 decimals"):
        BitcoinRpcChain(fake.url, auth=("user", "secret")).balance("rltc1qmrgaghydyaev4vhhgrdvt8smd0ynnhkrv7wqah",
                                                                    LTC)


def test_a_cookie_file_is_read_for_each_call(fake, tmp_path):
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:first")
    adapter = BitcoinRpcChain(fake.url, auth=str(cookie))
    fake.script += [(200, b'{"result": 5, "error": null, "id": 1}', 0),
                    (200, b'{"result": 6, "error": null, "id": 2}', 0)]
    assert adapter.tip_height() == 5
    cookie.write_text("__cookie__:second")  # the node restarted
    assert adapter.tip_height() == 6
    assert fake.authorizations == ["Basic " + base64.b64encode(f"__cookie__:{word}".encode()).decode()
                                   for word in ("first", "second")]
    cookie.unlink()
    with pytest.raises(TransientError, match="cookie"):
        adapter.tip_height()


# -- other processes drive the node --

@pytest.mark.security
def test_the_control_api_drives_the_node_with_a_bearer_token(node, chain):
    token = secrets.token_urlsafe(16)
    server = ControlServer(node, token)
    try:
        remote = RemoteLitecoinRegtest(node.url, server.url, token)
        address = remote.new_address()
        remote.fund(address, LTC, 20_000_000)
        sent = remote.send(address, remote.new_address(), LTC, 5_000_000)
        height = remote.mine(1)
        assert chain.transaction(sent.txid, LTC).height == height
        assert chain.balance(address, LTC).amount == 15_000_000 - sent.fee
        with pytest.raises(PermanentError, match="bearer token"):
            RemoteLitecoinRegtest(node.url, server.url, "wrong").new_address()
        with pytest.raises(PermanentError, match="INSUFFICIENT_BALANCE|no coins"):
            remote.send(remote.new_address(), address, LTC, 1_000_000)
    finally:
        server.stop()


def test_the_command_line_writes_private_credentials_and_stops_on_sigterm(tmp_path):
    credentials = tmp_path / "ltc.json"
    cli = subprocess.Popen([sys.executable, "-m", "emulators.litecoin", "--credentials-file", str(credentials)],
                           cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    try:
        banner = cli.stdout.readline()
        assert "http://127.0.0.1:" in banner
        assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
        remote = RemoteLitecoinRegtest.from_credentials_file(credentials)
        adapter = BitcoinRpcChain(remote.url, chain="litecoin", auth=remote.auth)
        address = remote.new_address()
        remote.fund(address, LTC, 10_000_000)
        assert adapter.balance(address, LTC).amount == 10_000_000
        adapter.close()

        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
        assert not credentials.exists()
        # The node is gone: a retry later may find it back, so the error is transient.
        with pytest.raises(TransientError) as exc:
            adapter.tip_height()
        assert exc.value.code == ErrorCode.CONNECTION
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_a_port_already_taken_is_reported_and_cleaned_up(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="litecoind did not start"):
            start_litecoin_regtest(tmp_path / "node", port=taken.getsockname()[1])
