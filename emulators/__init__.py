"""Local stand-ins for the portal's counterparties, for tests and demos. They listen on 127.0.0.1 only."""
