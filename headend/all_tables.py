"""Every table module of the database, imported for their side effect of adding their tables
to :data:`mdm.schema.metadata`: one migration history (``mdm/migrations``) covers them all.
Keep one import per line."""

import headend.schema  # noqa: F401
