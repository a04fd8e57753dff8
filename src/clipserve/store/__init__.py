"""Persistent state: accounts, API keys, the ledger, rate-limit windows (SQLAlchemy Core; SQLite or Postgres)."""
