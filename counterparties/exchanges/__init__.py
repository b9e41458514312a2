"""Exchange adapters: one interface (`base.ExchangeAdapter`), one class per licensed platform."""

from counterparties.exchanges.base import (
    Deposit,
    DepositStatus,
    ExchangeAdapter,
    Fill,
    MessageRecord,
    Order,
    OrderStatus,
    Quote,
    Side,
    Withdrawal,
    WithdrawalStatus,
)
from counterparties.exchanges.hashkey import HashKeyExchange
from counterparties.exchanges.osl import OslExchange

__all__ = [
    "Deposit", "DepositStatus", "ExchangeAdapter", "Fill", "HashKeyExchange", "MessageRecord", "Order",
    "OrderStatus", "OslExchange", "Quote", "Side", "Withdrawal", "WithdrawalStatus",
]
