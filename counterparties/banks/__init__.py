"""The bank side of the money (states 9-12): camt.053/camt.054 statements in, pain.001 payment orders out.

``iso20022`` reads and writes the messages; ``client`` holds the adapters (a drop folder and an HTTP API)
behind one ``BankAdapter`` interface. Nothing here touches the database; the portal's services will call
the adapters and record what they return.
"""

from .client import (
    BankAdapter,
    DropFolderBank,
    HttpBank,
    PaymentState,
    PaymentStatus,
    Rejected,
    StatementBatch,
)
from .iso20022 import (
    Debtor,
    Entry,
    FxDetail,
    Payment,
    PaymentOrder,
    Statement,
    TransactionDetail,
    build_pain001,
    parse_pain001,
    parse_statement,
    parse_statements,
)

__all__ = [
    "BankAdapter", "DropFolderBank", "HttpBank", "PaymentState", "PaymentStatus", "Rejected", "StatementBatch",
    "Debtor", "Entry", "FxDetail", "Payment", "PaymentOrder", "Statement", "TransactionDetail",
    "build_pain001", "parse_pain001", "parse_statement", "parse_statements",
]
