"""mdm's refusal: a CimError (so adapters report it like any other) that names the row.

``row`` is the 0-based index of the offending row in the batch as given, ``key`` says which
value it is (device, channel, timestamp). Both are None when the problem is not one row's
(e.g. the database refused a whole set-based statement).
"""

from __future__ import annotations

from dataclasses import dataclass

from cim.errors import CimError


@dataclass
class MdmError(CimError):
    row: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.key:
            where.append(self.key)
        place = f"{', '.join(where)}: " if where else ""
        return f"[{self.error.code}] {place}{self.reason}"
