"""The catalog: the source of truth for what exists (SQLAlchemy Core; SQLite or PostgreSQL)."""
