"""What a job does on each meter, as a small JSON document that a schedule keeps and the CLI
builds from its options; :meth:`Action.command` turns it into the :mod:`headend.commands`
command for one firing (with that firing's data window).

The JSON forms::

    {"read": "registers", "obis": ["1.0.1.8.0.255", ...]}   # obis optional: energy registers
    {"read": "profile", "profile": null}                    # the meter's default load profile
    {"read": "events", "log": null}                         # the standard event log
    {"read": "full", "obis": [...], "profile": null}        # profile and registers, one session
    {"control": "disconnect"}                               # connect, arm, clock_sync, ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cim.errors import CimError, ErrorCode
from headend import commands

READS = ("registers", "profile", "events", "full")
DEFAULT_REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255")
#: The window of a profile read when the job gives none: the last day up to now.
DEFAULT_SPAN = timedelta(days=1)
#: The device a command template names before a job gives each task its meter.
TEMPLATE_DEVICE = "*"


def _refuse(reason: str) -> CimError:
    return CimError(ErrorCode.BAD_VALUE, reason)


@dataclass(frozen=True, slots=True)
class Action:
    read: str | None = None  # registers | profile | events | full (profile + registers)
    control: commands.ControlAction | None = None
    obis: tuple[str, ...] = ()
    profile: str | None = None
    log: str | None = None

    def __post_init__(self) -> None:
        if (self.read is None) == (self.control is None):
            raise _refuse("an action is either a read or a control")
        if self.read is not None and self.read not in READS:
            raise _refuse(f"read {self.read!r} is not one of {', '.join(READS)}")
        if self.control is not None:
            try:
                object.__setattr__(self, "control", commands.ControlAction(self.control))
            except ValueError:
                known = ", ".join(a.value for a in commands.ControlAction)
                raise _refuse(f"control {self.control!r} is not one of {known}") from None
        object.__setattr__(self, "obis", tuple(self.obis))
        if self.read in ("registers", "full") and not self.obis:
            object.__setattr__(self, "obis", DEFAULT_REGISTERS)
        if not all(isinstance(o, str) and o for o in self.obis):
            raise _refuse("obis must be a list of OBIS codes")

    @property
    def is_control(self) -> bool:
        return self.control is not None

    @property
    def uses_window(self) -> bool:
        return self.read in ("profile", "events", "full")

    def describe(self) -> str:
        if self.control is not None:
            return f"control {self.control.value}"
        return f"read {self.read}"

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        if self.control is not None:
            return {"control": self.control.value}
        out: dict[str, Any] = {"read": self.read}
        if self.read in ("registers", "full"):
            out["obis"] = list(self.obis)
        if self.read in ("profile", "full"):
            out["profile"] = self.profile
        if self.read == "events":
            out["log"] = self.log
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> Action:
        if not isinstance(data, dict):
            raise _refuse("an action is a JSON object")
        allowed = {"read", "control", "obis", "profile", "log"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise _refuse(f"unknown action field(s): {', '.join(unknown)}")
        obis = data.get("obis") or ()
        if isinstance(obis, str) or not isinstance(obis, list | tuple):
            raise _refuse("obis must be a list of OBIS codes")
        return cls(
            read=data.get("read"),
            control=data.get("control"),
            obis=tuple(obis),
            profile=data.get("profile"),
            log=data.get("log"),
        )

    @classmethod
    def from_json(cls, text: str) -> Action:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _refuse(f"the action is not JSON: {exc}") from None
        return cls.from_dict(data)

    # -- the command ---------------------------------------------------------------------------

    def command(
        self,
        device: str = TEMPLATE_DEVICE,
        window: tuple[datetime, datetime] | None = None,
        *,
        now: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> commands.Command:
        """The command for ``device``; reads of a profile or events cover ``window`` (a
        profile without one: the last day before ``now``). ``full`` is one
        :class:`headend.commands.FullRead`: the profile over the window and the registers in
        one session."""
        extra: dict[str, Any] = {}
        if idempotency_key is not None:
            extra["idempotency_key"] = idempotency_key
        try:
            if self.control is not None:
                return commands.Control(device=device, action=self.control, **extra)
            if self.read == "registers":
                return commands.ReadRegisters(device=device, obis=self.obis, **extra)
            if self.read == "events":
                start, end = window if window is not None else (None, None)
                return commands.ReadEvents(
                    device=device, log=self.log, start=start, end=end, **extra
                )
            if window is None:
                if now is None:
                    raise _refuse(f"a {self.read} read needs a window or the current time")
                window = (now - DEFAULT_SPAN, now)
            if self.read == "full":
                return commands.FullRead(
                    device=device,
                    start=window[0],
                    end=window[1],
                    obis=self.obis,
                    profile=self.profile,
                    **extra,
                )
            return commands.ReadIntervalData(
                device=device, start=window[0], end=window[1], profile=self.profile, **extra
            )
        except commands.CommandError as exc:
            raise _refuse(str(exc)) from None


__all__ = ["DEFAULT_REGISTERS", "READS", "TEMPLATE_DEVICE", "Action"]
