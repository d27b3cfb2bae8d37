"""Alembic's entry point: migrations run on the connection core/storage/migrate.py hands in."""

from alembic import context

from core.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  # SQLite alters tables by copying them; batch mode does that for us.
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
