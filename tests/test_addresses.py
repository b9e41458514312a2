"""Tests for cases.addresses.

Valid vectors come from two independent sources: bip_utils' *encoders* run on a
fixed key (so the validator is checked against the other half of the library),
and published BIP-173 / BIP-350 / EIP-55 vectors (so neither half can be wrong
in the same way unnoticed).
"""

import random

import pytest
from bip_utils import (Base58Encoder, CoinsConf, EthAddrEncoder, P2PKHAddrEncoder, P2SHAddrEncoder,
                       P2TRAddrEncoder, P2WPKHAddrEncoder, Secp256k1PrivateKey, SegwitBech32Decoder,
                       SegwitBech32Encoder, TrxAddrEncoder)

from django.core.exceptions import ImproperlyConfigured

from cases.addresses import (ADDRESS_FORMATS, BTC, EVM, LTC, MAINNET, REGTEST, TRON, AddressError, chain_network,
                             demo_address, validate_address)

PUB = Secp256k1PrivateKey.FromBytes(bytes(range(1, 33))).PublicKey()
BTC_NET = CoinsConf.BitcoinMainNet
LTC_NET = CoinsConf.LitecoinMainNet
BTC_P2PKH = P2PKHAddrEncoder.EncodeKey(PUB, net_ver=BTC_NET.ParamByKey("p2pkh_net_ver"))
BTC_P2SH = P2SHAddrEncoder.EncodeKey(PUB, net_ver=BTC_NET.ParamByKey("p2sh_net_ver"))
BTC_P2WPKH = P2WPKHAddrEncoder.EncodeKey(PUB, hrp="bc", wit_ver=0)
BTC_P2WSH = SegwitBech32Encoder.Encode("bc", 0, bytes(range(32)))
BTC_P2TR = P2TRAddrEncoder.EncodeKey(PUB, hrp="bc")
LTC_P2PKH = P2PKHAddrEncoder.EncodeKey(PUB, net_ver=LTC_NET.ParamByKey("p2pkh_std_net_ver"))
LTC_P2SH = P2SHAddrEncoder.EncodeKey(PUB, net_ver=LTC_NET.ParamByKey("p2sh_std_net_ver"))
LTC_P2WPKH = P2WPKHAddrEncoder.EncodeKey(PUB, hrp="ltc", wit_ver=0)
LTC_P2WSH = SegwitBech32Encoder.Encode("ltc", 0, bytes(range(32)))
LTC_P2TR = P2TRAddrEncoder.EncodeKey(PUB, hrp="ltc")
EVM_ADDR = EthAddrEncoder.EncodeKey(PUB)
TRON_ADDR = TrxAddrEncoder.EncodeKey(PUB)

BIP173_UPPER = "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"
BIP173_P2WSH = "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3"
BIP350_P2TR = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"
EIP55_VECTORS = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def flip(address, index):
    """Replace one character with another from the same alphabet and case."""
    index %= len(address)
    c = address[index]
    alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l" if address[:4].lower() in ("bc1q", "bc1p", "ltc1") \
        else "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    replacement = next(r for r in alphabet if r != c and r.isupper() == c.isupper())
    return address[:index] + replacement + address[index + 1:]


@pytest.mark.parametrize("address", [
    BTC_P2PKH, BTC_P2SH, BTC_P2WPKH, BTC_P2WSH, BTC_P2TR, BIP173_P2WSH, BIP350_P2TR,
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",  # genesis block coinbase
])
def test_valid_bitcoin(address):
    assert address[0] in "13b"
    assert validate_address(f"  {address}\n", BTC) == address


@pytest.mark.parametrize("address", [LTC_P2PKH, LTC_P2SH, BTC_P2SH, LTC_P2WPKH, LTC_P2WSH, LTC_P2TR])
def test_valid_litecoin(address):
    assert address[0] in "LM3l"
    assert validate_address(address, LTC) == address


def test_uppercase_bech32_is_returned_lowercase():
    assert validate_address(BIP173_UPPER, BTC) == BIP173_UPPER.lower()
    assert validate_address(LTC_P2TR.upper(), LTC) == LTC_P2TR


def test_mixed_case_bech32_rejected():
    mixed = BIP173_UPPER[:10] + BIP173_UPPER[10:].lower()
    with pytest.raises(AddressError, match="mixed"):
        validate_address(mixed, BTC)


@pytest.mark.parametrize("address", [
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # BIP-350: v0 with bech32m checksum
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # v1 with bech32
])
def test_bip350_checksum_variant_enforced(address):
    with pytest.raises(AddressError, match="BIP-350"):
        validate_address(address, BTC)


@pytest.mark.parametrize("address, version", [
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", 2),  # BIP-350 valid, but not a type in use
    ("BC1SW50QGDZ25J", 16),
])
def test_future_witness_versions_rejected(address, version):
    with pytest.raises(AddressError, match=f"version {version} addresses are not in use"):
        validate_address(address, BTC)


@pytest.mark.parametrize("version, size, message", [(1, 20, "32-byte"), (0, 25, "wrong length")])
def test_witness_program_length(version, size, message):
    with pytest.raises(AddressError, match=message):
        validate_address(SegwitBech32Encoder.Encode("bc", version, bytes(size)), BTC)


@pytest.mark.parametrize("address, fmt", [
    (BTC_P2PKH, BTC), (BTC_P2SH, BTC), (BTC_P2WPKH, BTC), (BTC_P2TR, BTC),
    (LTC_P2PKH, LTC), (LTC_P2SH, LTC), (LTC_P2WPKH, LTC), (LTC_P2TR, LTC), (TRON_ADDR, TRON),
])
@pytest.mark.parametrize("index", [5, -1])
def test_single_character_typo_fails_checksum(address, fmt, index):
    with pytest.raises(AddressError, match="Checksum mismatch"):
        validate_address(flip(address, index), fmt)


@pytest.mark.parametrize("address", [BTC_P2PKH, BTC_P2WPKH, BTC_P2TR, BIP350_P2TR])
def test_bitcoin_address_on_litecoin(address):
    with pytest.raises(AddressError, match=r"^This is a Bitcoin address, not a Litecoin one\.$"):
        validate_address(address, LTC)


@pytest.mark.parametrize("address", [LTC_P2PKH, LTC_P2SH, LTC_P2WPKH, LTC_P2TR])
def test_litecoin_address_on_bitcoin(address):
    with pytest.raises(AddressError, match=r"^This is a Litecoin address, not a Bitcoin one\.$"):
        validate_address(address, BTC)


@pytest.mark.parametrize("address", [
    "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",  # BIP-173 testnet vector
    P2PKHAddrEncoder.EncodeKey(PUB, net_ver=CoinsConf.BitcoinTestNet.ParamByKey("p2pkh_net_ver")),
])
def test_testnet_rejected(address):
    with pytest.raises(AddressError, match="testnet address; only mainnet"):
        validate_address(address, BTC)


def test_cross_family_confusions():
    with pytest.raises(AddressError, match="not a Bitcoin one"):
        validate_address(TRON_ADDR, BTC)
    with pytest.raises(AddressError, match="EVM"):
        validate_address(EVM_ADDR, LTC)
    with pytest.raises(AddressError, match="not a TRON one"):
        validate_address(BTC_P2PKH, TRON)
    with pytest.raises(AddressError, match="not a TRON one"):
        validate_address(BTC_P2WPKH, TRON)
    with pytest.raises(AddressError, match="base58 form"):
        validate_address(EVM_ADDR, TRON)


@pytest.mark.parametrize("address", EIP55_VECTORS + [EVM_ADDR])
def test_evm_checksummed_and_single_case(address):
    assert validate_address(address, EVM) == address
    assert validate_address(address.lower(), EVM) == address
    assert validate_address("0x" + address[2:].upper(), EVM) == address


@pytest.mark.parametrize("address", EIP55_VECTORS + [EVM_ADDR])
def test_evm_one_letter_case_flipped(address):
    i = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    bad = address[:i] + address[i].swapcase() + address[i + 1:]
    with pytest.raises(AddressError, match=r"^EIP-55 checksum mismatch"):
        validate_address(bad, EVM)


@pytest.mark.parametrize("address", [
    EVM_ADDR[:-1], EVM_ADDR + "a", EVM_ADDR[2:], "0x" + "g" * 40, "0X" + EVM_ADDR[2:].lower(), "0x",
])
def test_evm_malformed(address):
    with pytest.raises(AddressError, match="40 hexadecimal"):
        validate_address(address, EVM)


@pytest.mark.parametrize("address", [TRON_ADDR, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"])  # 2nd: USDT contract
def test_tron_valid(address):
    assert validate_address(address, TRON) == address


@pytest.mark.parametrize("payload, fmt", [(b"\x41" + bytes(19), TRON), (b"\x05" + bytes(24), BTC),
                                          (b"\x05" + bytes(24), LTC)])
def test_base58_wrong_length(payload, fmt):
    with pytest.raises(AddressError, match="wrong length"):
        validate_address(Base58Encoder.CheckEncode(payload), fmt)


def test_base58_invalid_characters():
    with pytest.raises(AddressError, match="characters"):
        validate_address("T0" + TRON_ADDR[2:], TRON)


@pytest.mark.parametrize("value", ["", "   \t\n", None, 42, b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"])
@pytest.mark.parametrize("fmt", [code for code, _ in ADDRESS_FORMATS])
def test_address_required(value, fmt):
    with pytest.raises(AddressError, match=r"^An address is required\.$"):
        validate_address(value, fmt)


def test_unknown_format_and_overlong_input():
    with pytest.raises(AddressError, match="Unknown address format"):
        validate_address(BTC_P2PKH, "doge")
    with pytest.raises(AddressError, match="too long"):
        validate_address("1" * 5000, BTC)


def test_garbage_never_leaks_library_exceptions():
    # Anything a library raises must surface as AddressError, never as e.g.
    # Base58ChecksumError (which is not even a ValueError subclass).
    rng = random.Random(1234)
    alphabet = "0123456789abcdefABCDEFlOI1xqpTLMbct \u00e9\u200b"
    samples = ["bc1", "ltc1", "1", "bc1q", "0x", "T", "L", "BC1", "bc1" + "q" * 80]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    for fmt, _ in ADDRESS_FORMATS:
        for sample in samples:
            try:
                validate_address(sample, fmt)
            except AddressError:
                pass


# -- regtest: the emulated chains' addresses, accepted instead of mainnet ones under CHAIN_NETWORK = "regtest" --

LTC_TESTNET = CoinsConf.LitecoinTestNet  # Litecoin Core's regtest reuses its testnet version bytes
LTC_REGTEST_FROM_NODE = "rltc1qmrgaghydyaev4vhhgrdvt8smd0ynnhkrv7wqah"  # written by Litecoin Core 0.21 getnewaddress
LTC_REGTEST_P2WPKH = P2WPKHAddrEncoder.EncodeKey(PUB, hrp="rltc", wit_ver=0)
LTC_REGTEST_P2TR = P2TRAddrEncoder.EncodeKey(PUB, hrp="rltc")
LTC_REGTEST_P2PKH = P2PKHAddrEncoder.EncodeKey(PUB, net_ver=LTC_TESTNET.ParamByKey("p2pkh_std_net_ver"))
LTC_REGTEST_P2SH = P2SHAddrEncoder.EncodeKey(PUB, net_ver=LTC_TESTNET.ParamByKey("p2sh_std_net_ver"))
BTC_REGTEST_P2WPKH = P2WPKHAddrEncoder.EncodeKey(PUB, hrp="bcrt", wit_ver=0)
BTC_REGTEST_P2PKH = P2PKHAddrEncoder.EncodeKey(PUB, net_ver=CoinsConf.BitcoinRegTest.ParamByKey("p2pkh_net_ver"))


@pytest.fixture
def regtest(settings):
    settings.CHAIN_NETWORK = REGTEST


@pytest.mark.parametrize("address", [LTC_REGTEST_FROM_NODE, LTC_REGTEST_P2WPKH, LTC_REGTEST_P2TR, LTC_REGTEST_P2PKH,
                                     LTC_REGTEST_P2SH])
def test_valid_litecoin_regtest(regtest, address):
    assert address[0] in "rmnQ"
    assert validate_address(address, LTC) == address


def test_uppercase_regtest_bech32_is_returned_lowercase(regtest):
    assert validate_address(LTC_REGTEST_FROM_NODE.upper(), LTC) == LTC_REGTEST_FROM_NODE


@pytest.mark.parametrize("address", [BTC_REGTEST_P2WPKH, BTC_REGTEST_P2PKH])
def test_valid_bitcoin_regtest(regtest, address):
    assert validate_address(address, BTC) == address


@pytest.mark.parametrize("address, fmt", [(LTC_P2WPKH, LTC), (LTC_P2PKH, LTC), (LTC_P2SH, LTC),
                                          (BTC_P2WPKH, BTC), (BTC_P2PKH, BTC), (BTC_P2SH, BTC)])
def test_regtest_refuses_mainnet_addresses(regtest, address, fmt):
    with pytest.raises(AddressError, match="mainnet address; only regtest addresses are accepted"):
        validate_address(address, fmt)


def test_regtest_refuses_testnet_segwit_and_the_other_coin():
    with pytest.raises(AddressError, match="testnet address; only regtest"):
        validate_address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", BTC, REGTEST)
    with pytest.raises(AddressError, match=r"^This is a Bitcoin regtest address, not a Litecoin one\.$"):
        validate_address(BTC_REGTEST_P2WPKH, LTC, REGTEST)
    with pytest.raises(AddressError, match=r"^This is a Litecoin regtest address, not a Bitcoin one\.$"):
        validate_address(LTC_REGTEST_P2WPKH, BTC, REGTEST)


@pytest.mark.parametrize("address, fmt", [(LTC_REGTEST_FROM_NODE, LTC), (BTC_REGTEST_P2WPKH, BTC)])
def test_mainnet_still_refuses_regtest_addresses(address, fmt):
    assert chain_network() == MAINNET
    with pytest.raises(AddressError, match="regtest address; only mainnet addresses are accepted"):
        validate_address(address, fmt)


@pytest.mark.parametrize("address", [LTC_REGTEST_FROM_NODE, LTC_REGTEST_P2PKH])
def test_regtest_typo_fails_checksum(address):
    with pytest.raises(AddressError, match="Checksum mismatch"):
        validate_address(address[:-3] + ("q" if address[-3] != "q" else "p") + address[-2:], LTC, REGTEST)


def test_evm_and_tron_do_not_depend_on_the_network(regtest):
    assert validate_address(EVM_ADDR, EVM) == EVM_ADDR
    assert validate_address(TRON_ADDR, TRON) == TRON_ADDR


def test_demo_addresses_follow_the_configured_network(settings):
    assert demo_address(LTC, "seized").startswith("ltc1q")
    assert demo_address(BTC, "seized").startswith("bc1q")
    settings.CHAIN_NETWORK = REGTEST
    ltc, btc = demo_address(LTC, "seized"), demo_address(BTC, "seized")
    assert ltc.startswith("rltc1q") and btc.startswith("bcrt1q")
    assert validate_address(ltc, LTC) == ltc and validate_address(btc, BTC) == btc
    # Same label, same key: only the network's prefix (and so the checksum) differs.
    mainnet = demo_address(LTC, "seized", MAINNET)
    assert SegwitBech32Decoder.Decode("rltc", ltc) == SegwitBech32Decoder.Decode("ltc", mainnet)


def test_an_unknown_chain_network_is_a_configuration_error(settings):
    settings.CHAIN_NETWORK = "testnet"
    with pytest.raises(ImproperlyConfigured, match="CHAIN_NETWORK"):
        validate_address(BTC_P2WPKH, BTC)
