"""EndDeviceControls: ``create`` (or ``execute``): carry out controls on meters through the
head-end and reply with the state read back from each meter.

Control types (EndDeviceControlType ``type.domain.subDomain.eventOrAction``; the type
part is not looked at, so ``3.31.0.23`` and ``0.31.0.23`` are both a disconnect):

==============  ========================  =====================================
``*.31.0.23``   remote disconnect          :attr:`ControlAction.DISCONNECT`
``*.31.0.18``   remote connect             :attr:`ControlAction.CONNECT`
``*.31.0.5``    arm the switch for closure :attr:`ControlAction.ARM`
``*.8.0.214``   demand reset               :attr:`ControlAction.DEMAND_RESET`
``*.36.116.*``  clock / time sync          :attr:`ControlAction.CLOCK_SYNC`
==============  ========================  =====================================

Each EndDeviceControl becomes one control job for its devices (EndDevices by mRID or name,
EndDeviceGroups, UsagePoints), in document order, with an idempotency key made of the
MessageID and the control's position (the head-end derives each task's key from it and the
device): the same request again never operates a switch twice. A control whose
``primaryDeviceTiming`` starts more than a minute from now is refused (scheduled controls are
not carried out here). The reply echoes the EndDeviceControls and has one Error per device:
code 0.0 with the verified state ("disconnected, verified") for those that succeeded, the
failure's code for the others. Every control on every device is audited (:mod:`mdm.audit`,
object type ``EndDevice``, attribute ``control``: who, when, what, outcome).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cim.codelists.enddevicetype import EndDeviceTypeCode
from cim.end_device_controls import EndDeviceControl, EndDeviceControls
from cim.envelope import ReplyError
from cim.errors import CimError, ErrorCode
from headend.commands import Control, ControlAction
from headend.handlers import Context, Outcome, device_error, device_note, resolve_devices
from headend.handlers.jobs import JobResult, run_job
from mdm.audit import record
from mdm.database import transaction
from mdm.schema import WHO_LENGTH

#: (domain, subDomain, eventOrAction) -> action; None for eventOrAction: any.
CONTROL_TYPES: dict[tuple[int, int, int | None], ControlAction] = {
    (31, 0, 23): ControlAction.DISCONNECT,
    (31, 0, 18): ControlAction.CONNECT,
    (31, 0, 5): ControlAction.ARM,
    (8, 0, 214): ControlAction.DEMAND_RESET,
    (36, 116, None): ControlAction.CLOCK_SYNC,
}
#: A control due later than this is a scheduled control: refused.
LATEST_START = timedelta(minutes=1)
_TEMPLATE = "*"


def action_for(code: str) -> ControlAction:
    """The action an EndDeviceControlType code asks for; CimError BAD_END_DEVICE_TYPE if
    OpenHES does not carry it out."""
    parsed = EndDeviceTypeCode.parse(code, strict=False)
    key = (parsed.domain, parsed.sub_domain, parsed.event_or_action)
    action = CONTROL_TYPES.get(key) or CONTROL_TYPES.get((key[0], key[1], None))
    if action is None:
        known = ", ".join(
            f"*.{d}.{s}.{'*' if e is None else e} ({a.value})"
            for (d, s, e), a in CONTROL_TYPES.items()
        )
        raise CimError(
            ErrorCode.BAD_END_DEVICE_TYPE,
            f"EndDeviceControlType {code} ({parsed.describe()}) is not a control OpenHES "
            f"carries out; it does: {known}",
        )
    return action


def _document(ctx: Context) -> EndDeviceControls:
    document = ctx.document(EndDeviceControls)
    if not document.controls:
        raise CimError(ErrorCode.MISSING_ELEMENT, "the EndDeviceControls payload is empty")
    return document


async def create_end_device_controls(ctx: Context) -> Outcome:
    document = _document(ctx)
    if ctx.headend is None:
        raise CimError(ErrorCode.INTERNAL, "no head-end is configured to carry out controls")
    outcome = Outcome(document=document)
    for index, control in enumerate(document.controls):
        await _one_control(ctx, index, control, outcome)
    return outcome


async def _one_control(
    ctx: Context, index: int, control: EndDeviceControl, outcome: Outcome
) -> None:
    found = await ctx.run_blocking(
        resolve_devices,
        ctx.store,
        control.end_devices,
        control.end_device_groups,
        control.usage_points,
        small=True,
    )
    outcome.errors.extend(found.errors)
    if not (control.end_devices or control.end_device_groups or control.usage_points):
        outcome.errors.append(
            device_error(
                control.mrid or f"EndDeviceControl[{index + 1}]",
                ErrorCode.MISSING_ELEMENT,
                "the EndDeviceControl names no EndDevice, EndDeviceGroup or UsagePoint",
                object_type="EndDeviceControl",
            )
        )
        return
    try:
        action = action_for(control.control_type)
        _check_timing(control)
    except CimError as error:
        for mrid in found.mrids:
            outcome.errors.append(device_error(mrid, error.error, error.reason))
            await ctx.run_blocking(
                _audit,
                ctx,
                mrid,
                control.control_type,
                f"refused: {error.code} {error.reason}",
                None,
                small=True,
            )
        return
    if not found.mrids:
        return
    result = await run_job(
        ctx,
        Control(device=_TEMPLATE, action=action),
        found.mrids,
        name="EndDeviceControls",
        key=f"control{index}",
    )
    for mrid in found.mrids:
        entry = _device_result(mrid, action, result)
        if entry.code == ErrorCode.OK.code:
            outcome.notes.append(entry)
            outcome.succeeded += 1
        else:
            outcome.errors.append(entry)
        await ctx.run_blocking(
            _audit, ctx, mrid, action.value, _outcome_text(entry), result.job_id, small=True
        )


def _check_timing(control: EndDeviceControl) -> None:
    timing = control.primary_device_timing
    start = timing.interval.start if timing is not None and timing.interval else None
    if start is not None and start > datetime.now(UTC) + LATEST_START:
        raise CimError(
            ErrorCode.BAD_VALUE,
            f"the control is due at {start.isoformat()}: scheduled controls are not carried "
            "out; send it when it is due",
        )


def _device_result(mrid: str, action: ControlAction, result: JobResult) -> ReplyError:
    if mrid in result.errors:
        return result.errors[mrid]
    task = result.tasks.get(mrid)
    done = (task.result if task is not None else None) or {}
    state = done.get("state")
    verified = bool(done.get("verified", True))
    operated = done.get("operated")
    if action is ControlAction.CLOCK_SYNC:
        reason = "clock set"
    elif action is ControlAction.DEMAND_RESET:
        reason = "demand reset"
    else:
        reason = f"{state or 'state unknown'}{', verified' if verified else ', not verified'}"
    details = [f"action={action.value}", f"verified={str(verified).lower()}"]
    if state is not None:
        details.append(f"state={state}")
    if operated is not None:
        details.append(f"operated={str(bool(operated)).lower()}")
    if result.job_id is not None:
        details.append(f"job={result.job_id}")
    return device_note(mrid, reason, "; ".join(details))


def _outcome_text(entry: ReplyError) -> str:
    if entry.code == ErrorCode.OK.code:
        return f"ok: {entry.reason}"
    return f"failed: {entry.code} {entry.reason}"


def _audit(ctx: Context, mrid: str, what: str, outcome: str, job_id: str | None) -> None:
    note = (
        f"{what} via {ctx.channel} ({ctx.principal.authenticated_by}); "
        f"MessageID {ctx.message_id or '-'}"
        + (f"; CorrelationID {ctx.header.correlation_id}" if ctx.header.correlation_id else "")
        + (f"; job {job_id}" if job_id else "")
    )
    with transaction(ctx.store) as conn:
        record(
            conn,
            who=(ctx.principal.name or "?")[:WHO_LENGTH],
            object_type="EndDevice",
            object_id=mrid[:200],
            changes=[("control", None, f"{what} {outcome}")],
            note=note,
        )


__all__ = ["CONTROL_TYPES", "action_for", "create_end_device_controls"]
