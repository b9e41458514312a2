"""Adapters for the portal's outside counterparties (exchanges, banks, later chains).

Each counterparty sits behind a small adapter whose errors say whether a failure is permanent or worth
a retry (see `counterparties.errors`). Nothing here touches the database: the portal's services call the
adapters and store what they return, including the message records handed to the `recorder`.
"""
