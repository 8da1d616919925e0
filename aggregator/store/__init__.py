"""The only package that speaks SQL (DESIGN §8, §10).

``Store`` is the interface every stage uses; ``open_store`` picks the engine
from the ``database`` setting: a file path gives SQLite (the embedded
default), a ``postgresql://`` URL gives PostgreSQL (several machines).
"""

from __future__ import annotations

from pathlib import Path

from aggregator.store.articles import IngestTransaction
from aggregator.store.base import RetentionResult, StoreError, SyncResult
from aggregator.store.feeds import LeaseLost
from aggregator.store.search import SearchMixin as Store
from aggregator.store.sqlite import SQLiteStore, check_database_path
from aggregator.store.stories import StoryMember, StoryView

__all__ = [
    "IngestTransaction",
    "LeaseLost",
    "RetentionResult",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoryMember",
    "StoryView",
    "SyncResult",
    "check_database_path",
    "is_postgres_url",
    "open_store",
]


def is_postgres_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def open_store(database: str | Path, root: Path | None = None, readonly: bool = False) -> Store:
    """The store the ``database`` setting names (a path is relative to root)."""
    if isinstance(database, str) and is_postgres_url(database):
        from aggregator.store.postgres import PostgresStore  # psycopg only for a cluster

        return PostgresStore(database, readonly=readonly)
    path = Path(database)
    if root is not None and not path.is_absolute():
        path = root / path
    return SQLiteStore(path, readonly=readonly)
