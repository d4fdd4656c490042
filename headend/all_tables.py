"""Every table module of the database, imported for their side effect of adding their tables
to :data:`mdm.schema.metadata`: one migration history (``mdm/migrations``) covers them all.
Keep one import per line."""

import adapters.auth.schema  # noqa: F401
import headend.message_log
import headend.ops_schema
import headend.outbox
import headend.schema  # noqa: F401
