"""Alembic environment for the meter data store (see mdm/migrate.py).

The connection comes from ``config.attributes["connection"]``; run through mdm.migrate,
never with an alembic.ini of its own.
"""

from __future__ import annotations

from alembic import context

import headend.all_tables  # noqa: F401  (every table shares mdm.schema.metadata)
from mdm.migrate import include_object
from mdm.schema import metadata


def run_migrations() -> None:
    config = context.config
    version_table = config.get_main_option("version_table") or "mdm_alembic_version"
    if context.is_offline_mode():
        # SQL script generation (mdm.migrate.sql_script): no database needed.
        context.configure(
            dialect_name=config.attributes["dialect_name"],
            target_metadata=metadata,
            version_table=version_table,
            literal_binds=True,
        )
    else:
        connection = config.attributes.get("connection")
        if connection is None:
            raise RuntimeError("run migrations through mdm.migrate (it passes the connection)")
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            include_object=include_object,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
