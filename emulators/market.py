"""A replayed market for the exchange emulator, and the liquidity providers that quote on it.

BTC/USD is real: one day of Bitstamp BTC/USD 1-minute candles (2025-01-07, "Bitstamp BTC/USD 1-minute
data", from the public repository ff137/bitstamp-btcusd-minute-data, MIT), read from
``emulators/data/btcusd_bitstamp_1min_2025-01-07.csv`` (or the file named by ``EMULATOR_BTC_CSV``). Minute
``i`` (0–1439) of the replay is row ``i``; its mid price is that candle's close.

ETH/USD and LTC/USD are **synthetic**: no clean minute data for them was available. Their paths are seeded
and calibrated to the BTC day: each minute's log return is ``beta * r_btc + idiosyncratic noise`` so that
the path has ``vol_ratio`` times BTC's 1-minute volatility of that day and correlation ``correlation``
with it (so they fall with BTC on this stress day). Their daily volume is BTC's USD volume times
``notional_ratio``, in coins. Same seed → same path, on every machine.

Quotes: each liquidity provider prices a request at

    mid × (1 ∓ (half_spread + noise + impact)),   impact = Y × σ_day × √(Q / V)

(the square-root market-impact law), with ``−`` when the client sells (the provider bids) and ``+`` when it
buys. ``σ_day`` is the asset's daily volatility on the replayed day, ``V`` the day's volume times
``LIQUIDITY_MULTIPLE`` (Bitstamp is a small share of all spot volume), ``noise`` a deterministic draw in
``[0, noise_bps]``. Prices are rounded to the cent in the provider's favour. Floats are used only to build
the synthetic paths; every price handed out is a ``Decimal``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

CSV_NAME = "btcusd_bitstamp_1min_2025-01-07.csv"
MINUTES = 1440
TICK = Decimal("0.01")
BPS = Decimal("0.0001")
# Bitstamp's share of all BTC spot volume is small; the providers' liquidity is taken as this multiple.
LIQUIDITY_MULTIPLE = Decimal(20)


@dataclass(frozen=True)
class LiquidityProvider:
    name: str
    half_spread_bps: Decimal
    impact_y: Decimal  # the Y of the square-root law
    noise_bps: Decimal


LIQUIDITY_PROVIDERS: tuple[LiquidityProvider, ...] = (
    LiquidityProvider("LP-Alpha", Decimal(5), Decimal("0.9"), Decimal(2)),
    LiquidityProvider("LP-Bravo", Decimal(8), Decimal("0.6"), Decimal(2)),
    LiquidityProvider("LP-Charlie", Decimal(12), Decimal("0.4"), Decimal(2)),
)


@dataclass(frozen=True)
class SyntheticSpec:
    start: float  # USD, near the asset's real price on 2025-01-07
    vol_ratio: float  # × BTC's 1-minute volatility that day
    correlation: float  # with BTC's 1-minute returns
    notional_ratio: float  # × BTC's USD volume that day


SYNTHETIC: dict[str, SyntheticSpec] = {
    "ETH": SyntheticSpec(start=3686.0, vol_ratio=1.35, correlation=0.85, notional_ratio=0.6),
    "LTC": SyntheticSpec(start=112.4, vol_ratio=1.6, correlation=0.75, notional_ratio=0.05),
}


def default_csv_path() -> Path:
    env = os.environ.get("EMULATOR_BTC_CSV")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "data" / CSV_NAME


def load_btc_closes(path: Path | None = None) -> tuple[list[Decimal], list[Decimal]]:
    """(closes, volumes) of the replayed day, one per minute, as Decimal."""
    closes, volumes = [], []
    with open(path or default_csv_path(), newline="") as fh:
        for row in csv.DictReader(fh):
            closes.append(Decimal(row["close"]))
            volumes.append(Decimal(row["volume"]))
    if len(closes) != MINUTES:
        raise ValueError(f"expected {MINUTES} minutes, found {len(closes)}")
    return closes, volumes


def _log_returns(prices: list[float]) -> list[float]:
    return [math.log(prices[i] / prices[i - 1]) for i in range(1, len(prices))]


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


class ReplayMarket:
    """Mid prices, daily volatility and volume per asset for the replayed day; thread-safe (read-only)."""

    def __init__(self, csv_path: Path | None = None, seed: int = 20250107) -> None:
        self.seed = seed
        closes, volumes = load_btc_closes(csv_path)
        self._mid: dict[str, list[Decimal]] = {"BTC": closes}
        # Floats only to simulate: log returns, exp and Gaussian noise of the synthetic paths. Every
        # price the emulator quotes is a Decimal quantized to the tick, never a float.
        btc = [float(c) for c in closes]
        r_btc = _log_returns(btc)
        sigma_btc = _std(r_btc)
        btc_volume = sum(volumes)
        btc_usd_volume = sum(c * v for c, v in zip(closes, volumes))
        self._volume: dict[str, Decimal] = {"BTC": btc_volume}
        self._sigma_day: dict[str, Decimal] = {"BTC": Decimal(repr(sigma_btc * math.sqrt(MINUTES)))}
        for asset, spec in SYNTHETIC.items():
            rng = random.Random(f"{seed}:{asset}")
            beta = spec.correlation * spec.vol_ratio
            idio = math.sqrt(1 - spec.correlation**2) * spec.vol_ratio * sigma_btc
            path = [spec.start]
            for r in r_btc:
                path.append(path[-1] * math.exp(beta * r + idio * rng.gauss(0.0, 1.0)))
            self._mid[asset] = [Decimal(repr(p)).quantize(TICK) for p in path]
            mean_price = sum(path) / len(path)
            self._volume[asset] = (btc_usd_volume * Decimal(repr(spec.notional_ratio)) / Decimal(repr(mean_price))
                                   ).quantize(Decimal("0.00000001"))
            self._sigma_day[asset] = Decimal(repr(_std(_log_returns(path)) * math.sqrt(MINUTES)))

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._mid)

    @staticmethod
    def minute_of_day(now: datetime | None = None) -> int:
        """The replay minute matching the wall clock's UTC time of day (the demo's default)."""
        now = now or datetime.now(UTC)
        return now.hour * 60 + now.minute

    def mid(self, asset: str, minute: int) -> Decimal:
        return self._mid[asset.upper()][minute % MINUTES]

    def daily_volume(self, asset: str) -> Decimal:
        return self._volume[asset.upper()]

    def daily_sigma(self, asset: str) -> Decimal:
        return self._sigma_day[asset.upper()]

    def impact(self, lp: LiquidityProvider, asset: str, quantity: Decimal) -> Decimal:
        """Square-root impact as a fraction of the mid."""
        liquidity = self.daily_volume(asset) * LIQUIDITY_MULTIPLE
        return lp.impact_y * self.daily_sigma(asset) * (quantity / liquidity).sqrt()

    def _noise(self, lp: LiquidityProvider, asset: str, minute: int, nonce: str) -> Decimal:
        digest = hashlib.sha256(f"{self.seed}:{lp.name}:{asset}:{minute}:{nonce}".encode()).digest()
        unit = Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)
        return lp.noise_bps * unit

    def price(self, lp: LiquidityProvider, asset: str, client_side: str, quantity: Decimal, minute: int,
              nonce: str = "") -> Decimal:
        """What ``lp`` quotes a client who sells (``client_side='sell'``) or buys ``quantity`` coins."""
        mid = self.mid(asset, minute)
        markup = (lp.half_spread_bps + self._noise(lp, asset, minute, nonce)) * BPS + self.impact(lp, asset, quantity)
        if client_side == "sell":
            return (mid * (1 - markup)).quantize(TICK, rounding=ROUND_FLOOR)
        return (mid * (1 + markup)).quantize(TICK, rounding=ROUND_CEILING)

    def worst_markup(self, asset: str, quantity: Decimal) -> Decimal:
        """The largest spread + noise + impact any provider can apply (for checks and docs)."""
        return max((lp.half_spread_bps + lp.noise_bps) * BPS + self.impact(lp, asset, quantity)
                   for lp in LIQUIDITY_PROVIDERS)
