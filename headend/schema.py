"""The head-end's tables, on the same :data:`mdm.schema.metadata` as the meter data store, so
one migration history (``mdm/migrations``) covers the database: the registry (revision 0002)
and the persisted jobs, tasks and attempts (revision 0003).

What mdm already holds (a device's mRID, serial, name, protocol, location, usage point,
groups, time zone) stays in mdm's tables; these add how to reach a meter and how to talk to
it securely. Secrets are stored only as tokens of :mod:`headend.keys` (AES-GCM under the
master key); ``key_id`` names the master key they are under, for rotation.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

from mdm.schema import devices, metadata
from mdm.sqltypes import UtcDateTime

PATH_ROLES = ("primary", "backup")
TRANSPORTS = ("wrapper", "hdlc")
AUTHENTICATIONS = ("none", "lls", "hls-gmac")
SECURITY_POLICIES = ("none", "authenticated_encrypted")

meter_paths = Table(
    "meter_paths",
    metadata,
    Column("device_id", Integer, ForeignKey(devices.c.id), nullable=False),
    Column("role", String(8), nullable=False),
    Column("transport", String(16), nullable=False),
    # A TCP path has host and port; a serial path has serial_port (and baud_rate).
    Column("host", String(255)),
    Column("port", Integer),
    Column("serial_port", String(128)),
    Column("baud_rate", Integer),
    Column("server_logical", Integer, nullable=False),
    Column("server_physical", Integer),  # HDLC lower address
    Column("wport", Integer),  # WRAPPER destination wPort
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("device_id", "role"),
    CheckConstraint("role IN ('primary', 'backup')", name="role"),
    CheckConstraint("transport IN ('wrapper', 'hdlc')", name="transport"),
    CheckConstraint(
        "(host IS NOT NULL AND port IS NOT NULL) OR serial_port IS NOT NULL", name="where"
    ),
)

meter_security = Table(
    "meter_security",
    metadata,
    Column("device_id", Integer, ForeignKey(devices.c.id), primary_key=True),
    Column("client_address", Integer, nullable=False),
    Column("authentication", String(16), nullable=False),
    Column("security_policy", String(32), nullable=False),
    Column("security_suite", SmallInteger),
    Column("server_system_title", String(16)),  # the meter's, hex (public)
    Column("invocation_counter_obis", String(32)),
    Column("logical_device_name", String(64)),
    Column("key_id", String(32)),  # the master key the secrets are under
    Column("password", Text),  # tokens of headend.keys, never plaintext
    Column("encryption_key", Text),
    Column("authentication_key", Text),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("authentication IN ('none', 'lls', 'hls-gmac')", name="authentication"),
)

# --- jobs (revision 0003) ----------------------------------------------------------------------
#
# A job is one command over a set of devices; a task is that command on one device; an attempt
# is one session with the device for a task. Workers (any process) load a task by id, record
# attempts and finish it; the job's state rolls up when its last task is finished.

JOB_KINDS = ("on_demand", "group", "bulk", "scheduled", "rerun")
JOB_STATES = ("queued", "running", "completed", "completed_with_errors", "cancelled")
TASK_STATES = ("queued", "running", "retry_wait", "succeeded", "failed", "expired", "cancelled")
TERMINAL_TASK_STATES = ("succeeded", "failed", "expired", "cancelled")
OPEN_TASK_STATES = ("queued", "running", "retry_wait")
FINISHED_JOB_STATES = ("completed", "completed_with_errors", "cancelled")
JOB_ID_LENGTH = 32
IDEMPOTENCY_KEY_LENGTH = 200
PATH_LENGTH = 255
#: The CorrelationID (else MessageID) of the request a job was made for (revision 0008).
CORRELATION_ID_LENGTH = 100

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


jobs = Table(
    "jobs",
    metadata,
    Column("id", String(JOB_ID_LENGTH), primary_key=True),  # uuid4 hex
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("priority", Integer, nullable=False),  # headend.jobs.Priority: lower runs first
    Column("state", String(24), nullable=False),
    Column("command", Text, nullable=False),  # JSON (headend.jobstore.command_to_json)
    Column("parameters", Text, nullable=False),  # JSON object
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LENGTH), unique=True),
    Column("parent_id", String(JOB_ID_LENGTH), ForeignKey("jobs.id")),  # the job re-run
    Column("schedule_id", Integer),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("total", Integer, nullable=False),
    # The request's CorrelationID (else its MessageID), carried into the job's HeadEndEvents
    # and the EventMessages pushed for them; NULL for jobs not made for a CIM request.
    Column("correlation_id", String(CORRELATION_ID_LENGTH)),
    CheckConstraint(_in("kind", JOB_KINDS), name="kind"),
    CheckConstraint(_in("state", JOB_STATES), name="state"),
    Index(None, "created_at"),
    Index(None, "state"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", _BigId, Identity(), primary_key=True),
    Column("job_id", String(JOB_ID_LENGTH), ForeignKey(jobs.c.id), nullable=False),
    Column("device_id", Integer, ForeignKey(devices.c.id), nullable=False, index=True),
    Column("mrid", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("path", String(PATH_LENGTH)),  # the communication path used by the last attempt
    Column("on_backup", Boolean(create_constraint=False), nullable=False),
    Column("error_code", String(16)),  # cim.errors.ErrorCode code, e.g. "7.2"
    Column("error_text", Text),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LENGTH), nullable=False, unique=True),
    Column("deadline", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("result", Text),  # JSON
    CheckConstraint(_in("state", TASK_STATES), name="state"),
    Index(None, "job_id", "state"),
)

task_attempts = Table(
    "task_attempts",
    metadata,
    Column("task_id", _BigId, ForeignKey(tasks.c.id), nullable=False),
    Column("number", Integer, nullable=False),
    Column("path", String(PATH_LENGTH), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", String(64)),  # "ok" or the cause ("timeout", "refused"...); NULL: running
    Column("detail", Text),
    Column("worker", String(128)),  # host:pid
    Column("bytes_sent", BigInteger, nullable=False),
    Column("bytes_received", BigInteger, nullable=False),
    Column("device_type", String(129)),  # "manufacturer model", for statistics
    PrimaryKeyConstraint("task_id", "number"),
    Index(None, "started_at"),
)

__all__ = [
    "AUTHENTICATIONS",
    "CORRELATION_ID_LENGTH",
    "FINISHED_JOB_STATES",
    "JOB_KINDS",
    "JOB_STATES",
    "OPEN_TASK_STATES",
    "PATH_ROLES",
    "SECURITY_POLICIES",
    "TASK_STATES",
    "TERMINAL_TASK_STATES",
    "TRANSPORTS",
    "jobs",
    "meter_paths",
    "meter_security",
    "task_attempts",
    "tasks",
]
