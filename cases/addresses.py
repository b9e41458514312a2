"""Validation of blockchain addresses recorded for seized cryptocurrency holdings.

Every decoding and checksum step is delegated to bip_utils (a maintained,
tested implementation); this module only decides which encodings each network
accepts and turns library failures into sentences a case officer can act on.
A wrong address in a seizure record can send funds somewhere unrecoverable, so
anything we cannot positively identify is rejected.

Which network's addresses are accepted follows ``settings.CHAIN_NETWORK``: "mainnet" (the default) for real
chains, "regtest" when the portal reads the emulated chains (Litecoin Core or Bitcoin Core in regtest mode),
whose addresses must then be accepted instead of mainnet ones. EVM and TRON addresses look the same on every
network.
"""

from string import hexdigits

from bip_utils import (
    Base58ChecksumError,
    Base58Decoder,
    Bech32ChecksumError,
    CoinsConf,
    Kekkak256,
    SegwitBech32Decoder,
)
from bip_utils.bech32.bech32 import Bech32Encodings, Bech32Utils
from bip_utils.bech32.bech32_base import Bech32BaseConst
from django.core.exceptions import ImproperlyConfigured

BTC = "btc"
LTC = "ltc"
EVM = "evm"
TRON = "tron"

ADDRESS_FORMATS = (
    (BTC, "Bitcoin"),
    (LTC, "Litecoin"),
    (EVM, "Ethereum / EVM-compatible"),
    (TRON, "TRON"),
)

_NAMES = dict(ADDRESS_FORMATS) | {EVM: "Ethereum"}

MAINNET = "mainnet"
REGTEST = "regtest"
NETWORKS = (MAINNET, REGTEST)


def chain_network() -> str:
    """The network whose addresses the portal accepts: ``settings.CHAIN_NETWORK``, "mainnet" by default."""
    from django.conf import settings

    try:
        network = getattr(settings, "CHAIN_NETWORK", MAINNET)
    except ImproperlyConfigured:  # outside the portal (an emulator's command line): real-chain addresses
        network = MAINNET
    if network not in NETWORKS:
        raise ImproperlyConfigured(f"CHAIN_NETWORK must be one of {NETWORKS}, not {network!r}.")
    return network


class AddressError(ValueError):
    """Raised with a human-readable sentence describing why an address was refused."""


# The longest address we accept is a 40-byte witness program in bech32 (~75
# chars). Capping early also bounds the quadratic big-integer base58 decode.
_MAX_LEN = 100

# Base58check payloads are 1 version byte + a 20-byte hash on every network here.
_B58_PAYLOAD_LEN = 21


def _ver(coin, key):
    return getattr(CoinsConf, coin).ParamByKey(key)[0]


# Version bytes we can put a name to, so a wrong-network paste gets a useful
# message. 0x05 (P2SH, "3…") is shared by Bitcoin and Litecoin's legacy P2SH:
# the bytes cannot tell them apart, so both formats accept it. Likewise the
# Bitcoin testnet bytes double as Litecoin testnet's legacy ones, hence no coin name.
_B58_NETWORKS = {
    _ver("BitcoinMainNet", "p2pkh_net_ver"): "Bitcoin",
    _ver("BitcoinMainNet", "p2sh_net_ver"): "Bitcoin or Litecoin",
    _ver("LitecoinMainNet", "p2pkh_std_net_ver"): "Litecoin",
    _ver("LitecoinMainNet", "p2sh_std_net_ver"): "Litecoin",
    _ver("BitcoinTestNet", "p2pkh_net_ver"): "testnet",
    _ver("BitcoinTestNet", "p2sh_net_ver"): "testnet",
    _ver("LitecoinTestNet", "p2sh_std_net_ver"): "Litecoin testnet",
    _ver("Tron", "addr_prefix"): "TRON",
}
# Regtest reuses the testnet version bytes (Bitcoin Core and Litecoin Core chainparams), so under "regtest"
# the testnet ones are accepted; 0x6f and 0xc4 are shared by both coins, like 0x05 on mainnet.
_B58_ACCEPTED = {
    MAINNET: {
        BTC: {_ver("BitcoinMainNet", "p2pkh_net_ver"), _ver("BitcoinMainNet", "p2sh_net_ver")},
        LTC: {
            _ver("LitecoinMainNet", "p2pkh_std_net_ver"),
            _ver("LitecoinMainNet", "p2sh_std_net_ver"),
            _ver("LitecoinMainNet", "p2sh_depr_net_ver"),
        },
        TRON: {_ver("Tron", "addr_prefix")},
    },
    REGTEST: {
        BTC: {_ver("BitcoinRegTest", "p2pkh_net_ver"), _ver("BitcoinRegTest", "p2sh_net_ver")},
        LTC: {
            _ver("LitecoinTestNet", "p2pkh_std_net_ver"),
            _ver("LitecoinTestNet", "p2sh_std_net_ver"),
            _ver("LitecoinTestNet", "p2sh_depr_net_ver"),
        },
        TRON: {_ver("Tron", "addr_prefix")},
    },
}

# Segwit human-readable parts (SLIP-173); only the one of the configured network per coin is accepted.
_SEGWIT_HRPS = {
    CoinsConf.BitcoinMainNet.ParamByKey("p2wpkh_hrp"): "Bitcoin",
    CoinsConf.BitcoinTestNet.ParamByKey("p2wpkh_hrp"): "Bitcoin testnet",
    CoinsConf.BitcoinRegTest.ParamByKey("p2wpkh_hrp"): "Bitcoin regtest",
    CoinsConf.LitecoinMainNet.ParamByKey("p2wpkh_hrp"): "Litecoin",
    CoinsConf.LitecoinTestNet.ParamByKey("p2wpkh_hrp"): "Litecoin testnet",
    "rltc": "Litecoin regtest",
}
_SEGWIT_ACCEPTED = {
    MAINNET: {
        BTC: CoinsConf.BitcoinMainNet.ParamByKey("p2wpkh_hrp"),
        LTC: CoinsConf.LitecoinMainNet.ParamByKey("p2wpkh_hrp"),
    },
    REGTEST: {BTC: CoinsConf.BitcoinRegTest.ParamByKey("p2wpkh_hrp"), LTC: "rltc"},  # bip_utils lacks rltc
}
_TAPROOT_PROGRAM_LEN = 32


def _wrong_network(found, fmt, network):
    expected = _NAMES[fmt]
    if network == REGTEST:
        if found in (expected, "Bitcoin or Litecoin"):
            return AddressError(f"This is a {expected} mainnet address; only regtest addresses are accepted "
                                "on this test system.")
        if found in (f"{expected} testnet", "testnet"):
            return AddressError(f"This is a {found} address; only regtest addresses are accepted on this "
                                "test system.")
        return AddressError(f"This is a {found} address, not a {expected} one.")
    if found in (f"{expected} testnet", f"{expected} regtest"):
        return AddressError(f"This is a {found} address; only mainnet addresses are accepted.")
    if found == "testnet":
        return AddressError("This is a testnet address; only mainnet addresses are accepted.")
    return AddressError(f"This is a {found} address, not a {expected} one.")


def _base58_payload(address, fmt):
    try:
        return Base58Decoder.CheckDecode(address)
    except Base58ChecksumError:
        raise AddressError(
            "Checksum mismatch: the address has a typo or is incomplete."
        ) from None
    except Exception:  # the decoder signals a non-alphabet character with ValueError
        raise AddressError(
            f"This is not a valid {_NAMES[fmt]} address: it contains characters "
            "that base58 addresses never use (0, O, I, l or punctuation)."
        ) from None


def _check_base58(address, payload, fmt, network):
    if len(payload) != _B58_PAYLOAD_LEN:
        raise AddressError(f"This {_NAMES[fmt]} address has the wrong length.")
    version = payload[0]
    if version in _B58_ACCEPTED[network][fmt]:
        return address
    if version in _B58_NETWORKS:
        raise _wrong_network(_B58_NETWORKS[version], fmt, network)
    raise AddressError(f"This is not a {_NAMES[fmt]} address (unknown address type).")


def _segwit_hrp(address):
    lowered = address.lower()
    hrp = lowered[: lowered.rfind("1")] if "1" in lowered else None
    return hrp if hrp in _SEGWIT_HRPS else None


def _uses_other_bech32_variant(hrp, address):
    # The segwit decoder already rejected the variant BIP-350 mandates for this
    # witness version; if the other variant verifies, the address was made by
    # software that ignores BIP-350, which deserves its own message.
    data = [Bech32BaseConst.CHARSET.find(c) for c in address[len(hrp) + 1:]]
    if not data or min(data) < 0:
        return False
    return any(Bech32Utils.VerifyChecksum(hrp, data, enc) for enc in Bech32Encodings)


def _check_segwit(address, hrp, fmt, network):
    if address not in (address.lower(), address.upper()):
        raise AddressError("Bech32 addresses must be all lowercase or all uppercase, not mixed.")
    address = address.lower()
    try:
        version, program = SegwitBech32Decoder.Decode(hrp, address)
    except Bech32ChecksumError:
        if _uses_other_bech32_variant(hrp, address):
            raise AddressError(
                "Wrong checksum type: segwit version 0 addresses must use bech32 and "
                "later versions bech32m (BIP-350)."
            ) from None
        raise AddressError("Checksum mismatch: the address has a typo or is incomplete.") from None
    except Exception:  # bad characters, bad padding, bad program length, ...
        raise AddressError(
            f"This is not a valid {_SEGWIT_HRPS[hrp]} segwit address (malformed or wrong length)."
        ) from None
    if hrp != _SEGWIT_ACCEPTED[network][fmt]:
        raise _wrong_network(_SEGWIT_HRPS[hrp], fmt, network)
    if version > 1:
        raise AddressError(
            f"Segwit version {version} addresses are not in use; only version 0 and "
            "version 1 (Taproot) addresses are accepted."
        )
    if version == 1 and len(program) != _TAPROOT_PROGRAM_LEN:
        # Valid per BIP-350 but not Taproot; such outputs are anyone-can-spend today.
        raise AddressError("A Taproot (bc1p/ltc1p) address must encode a 32-byte key.")
    return address


def _validate_bitcoin_like(address, fmt, network):
    # Try base58 first: a valid base58check string is unambiguous, whereas a
    # prefix test alone could mistake e.g. a TRON "TB1…" address for testnet bech32.
    hrp = _segwit_hrp(address)
    if hrp is not None:
        try:
            payload = Base58Decoder.CheckDecode(address)
        except Exception:
            return _check_segwit(address, hrp, fmt, network)
        return _check_base58(address, payload, fmt, network)
    if address.lower().startswith("0x"):
        raise AddressError(f"This is an Ethereum/EVM (0x…) address, not a {_NAMES[fmt]} one.")
    return _check_base58(address, _base58_payload(address, fmt), fmt, network)


def _eip55(hex_body):
    # EIP-55: uppercase each letter whose nibble in keccak256(lowercase hex) is >= 8.
    digest = Kekkak256.QuickDigest(hex_body.lower()).hex()
    return "".join(c.upper() if int(d, 16) >= 8 else c.lower() for c, d in zip(hex_body, digest))


def _validate_evm(address):
    body = address[2:]
    if not address.startswith("0x") or not all(c in hexdigits for c in body):
        raise AddressError("An EVM address must be 0x followed by 40 hexadecimal characters.")
    if len(body) != 40:
        raise AddressError(
            f"An EVM address has exactly 40 hexadecimal characters after 0x; this one has {len(body)}."
        )
    checksummed = _eip55(body)
    # Single-case addresses predate EIP-55 and carry no checksum to verify.
    if body not in (body.lower(), body.upper()) and body != checksummed:
        raise AddressError("EIP-55 checksum mismatch: check the upper/lower case letters.")
    return "0x" + checksummed


def _validate_tron(address):
    if address.lower().startswith("0x"):
        raise AddressError(
            "This is a hex (0x…) address; enter the TRON address in its base58 form starting with T."
        )
    hrp = _segwit_hrp(address)
    if hrp is not None:
        try:
            Base58Decoder.CheckDecode(address)
        except Exception:
            raise AddressError(
                f"This looks like a {_SEGWIT_HRPS[hrp]} segwit address, not a TRON one."
            ) from None
    return _check_base58(address, _base58_payload(address, TRON), TRON, MAINNET)


def validate_address(address: str, address_format: str, network: str | None = None) -> str:
    """Return the canonical address (stripped; for EVM the EIP-55 checksummed form) or raise AddressError.

    Bech32 addresses are returned in lowercase, the form BIP-173 recommends for display. `network` None:
    the configured one (:func:`chain_network`).
    """
    if not isinstance(address, str) or not address.strip():
        raise AddressError("An address is required.")
    address = address.strip()
    if address_format not in _NAMES:
        raise AddressError(f"Unknown address format: {address_format!r}.")
    if len(address) > _MAX_LEN:
        raise AddressError("This address is too long to be valid.")
    if address_format == EVM:
        return _validate_evm(address)
    if address_format == TRON:
        return _validate_tron(address)
    return _validate_bitcoin_like(address, address_format, network or chain_network())


def demo_address(address_format: str, label: str, network: str | None = None) -> str:
    """A valid, deterministic address for demo data and emulators, derived from a label.

    Nobody holds its key in any useful sense: the "key" is the SHA-256 of a public label. `network` None:
    the configured one, so that demo data passes :func:`validate_address`.
    """
    import hashlib

    from bip_utils import EthAddrEncoder, P2WPKHAddrEncoder, Secp256k1PrivateKey, TrxAddrEncoder

    key = Secp256k1PrivateKey.FromBytes(hashlib.sha256(label.encode()).digest()).PublicKey()
    if address_format in (BTC, LTC):
        hrp = _SEGWIT_ACCEPTED[network or chain_network()][address_format]
        return P2WPKHAddrEncoder.EncodeKey(key, hrp=hrp, wit_ver=0)
    if address_format == EVM:
        return EthAddrEncoder.EncodeKey(key)
    return TrxAddrEncoder.EncodeKey(key)
