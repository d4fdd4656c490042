"""The SOAP services OpenHES serves, read from its WSDLs (schemas/*.wsdl), plus the generic
service that takes a bare IEC 61968-100 RequestMessage or EventMessage.

Each service knows its operations by SOAPAction and by input element, and the output and
fault elements its answers are wrapped in. Dispatch (SOAPAction, then the Body's root element,
then Header Verb/Noun) lives here, away from HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from lxml import etree

from cim import namespaces as ns
from cim.xmlsafe import parse_bytes
from schemas import schema_names, schema_path

WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD = "http://www.w3.org/2001/XMLSchema"

# Services whose WSDL describes what OpenHES itself answers. The Reply* WSDLs describe the
# callers' side (where asynchronous replies are delivered) and ReceiveEndDeviceEvents the
# receiving side of OpenHES's own pushes (an OMS serves it); OpenHES does not serve them.
# SendMeterReadings and SendEndDeviceEvents take what other systems push in: their Created*
# operations ingest readings and store meter events (the router's created routes).
DEFAULT_SERVICES: tuple[str, ...] = (
    "GetMeterReadings",
    "ExecuteEndDeviceControls",
    "GetEndDeviceEvents",
    "ExecuteMeterReadSchedule",
    "SendMeterReadings",
    "SendEndDeviceEvents",
)
GENERIC = "Generic"
GENERIC_ACTION_BASE = ns.MESSAGE + "/"

_OPERATION = re.compile(
    r"^(Created|Changed|Canceled|Closed|Deleted|Executed|Create|Change|Cancel|Close|Delete"
    r"|Execute|Get)([A-Z]\w*)$"
)


@dataclass(frozen=True)
class Operation:
    name: str
    action: str
    input: str  # Clark notation {ns}local
    output: str
    fault: str
    verb: str | None  # what the Header's Verb should say, when the name tells
    noun: str | None

    @property
    def input_local(self) -> str:
        return ns.local_name(self.input)


@dataclass(frozen=True)
class Service:
    name: str
    wsdl_name: str | None  # file in schemas/, None for the generated generic WSDL
    operations: tuple[Operation, ...]
    fault: str  # the element a Fault's detail is written in
    by_action: dict[str, Operation] = field(default_factory=dict, compare=False)
    by_input: dict[str, Operation] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for operation in self.operations:
            self.by_action.setdefault(operation.action, operation)
            # Tolerate SOAPAction as the bare operation name (spyne and some .NET clients).
            self.by_action.setdefault(operation.name, operation)
            self.by_input.setdefault(operation.input_local, operation)

    @property
    def generic(self) -> bool:
        return self.wsdl_name is None


def _verb_noun(operation_name: str) -> tuple[str | None, str | None]:
    match = _OPERATION.match(operation_name)
    if not match:
        return None, None
    return match.group(1).lower(), match.group(2)


def _qname(element: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    namespace = element.nsmap.get(prefix or None)
    if namespace is None:
        raise ValueError(f"WSDL: unknown prefix in {value!r}")
    return f"{{{namespace}}}{local}"


@cache
def read_wsdl(name: str) -> Service:
    """The service described by one WSDL of schemas/."""
    root = parse_bytes(schema_path(name).read_bytes())
    w = f"{{{WSDL}}}"
    messages: dict[str, str] = {}
    for message in root.iter(w + "message"):
        part = message.find(w + "part")
        if part is not None:
            messages[message.get("name")] = _qname(part, part.get("element"))
    actions: dict[str, str] = {}
    for operation in root.iterfind(f"{w}binding/{w}operation"):
        soap_op = operation.find(f"{{{WSDL_SOAP11}}}operation")
        actions[operation.get("name")] = soap_op.get("soapAction") if soap_op is not None else ""
    operations = []
    fault_element = None
    for operation in root.iterfind(f"{w}portType/{w}operation"):
        op_name = operation.get("name")

        def element_of(kind: str, operation: etree._Element = operation) -> str:
            child = operation.find(w + kind)
            if child is None:
                raise ValueError(f"WSDL {name}: operation lacks {kind}")
            return messages[ns.local_name(_qname(child, child.get("message")))]

        verb, noun = _verb_noun(op_name)
        fault_element = element_of("fault")
        operations.append(
            Operation(
                name=op_name,
                action=actions.get(op_name, ""),
                input=element_of("input"),
                output=element_of("output"),
                fault=fault_element,
                verb=verb,
                noun=noun,
            )
        )
    if not operations or fault_element is None:
        raise ValueError(f"WSDL {name} declares no operation")
    service_name = root.get("name") or name.removesuffix(".wsdl")
    return Service(service_name, name, tuple(operations), fault_element)


def _generic_service() -> Service:
    m = f"{{{ns.MESSAGE}}}"
    operations = (
        Operation(
            "Request",
            GENERIC_ACTION_BASE + "Request",
            m + "RequestMessage",
            m + "ResponseMessage",
            m + "FaultMessage",
            None,
            None,
        ),
        Operation(
            "Event",
            GENERIC_ACTION_BASE + "Event",
            m + "EventMessage",
            m + "ResponseMessage",
            m + "FaultMessage",
            None,
            None,
        ),
    )
    return Service(GENERIC, None, operations, m + "FaultMessage")


@cache
def catalogue(names: tuple[str, ...] = DEFAULT_SERVICES) -> dict[str, Service]:
    """Services by name (the last part of their URL path); always includes the generic one."""
    available = set(schema_names(".wsdl"))
    services: dict[str, Service] = {}
    for name in names:
        file_name = f"{name}.wsdl"
        if file_name not in available:
            raise ValueError(f"no WSDL {file_name} in the OpenHES schemas")
        service = read_wsdl(file_name)
        services[name] = service
    services[GENERIC] = _generic_service()
    return services


@cache
def all_operations() -> dict[str, Operation]:
    """Every operation of every shipped WSDL, by SOAPAction: lets the generic endpoint check
    a per-noun SOAPAction against the body."""
    table: dict[str, Operation] = {}
    for file_name in schema_names(".wsdl"):
        for operation in read_wsdl(file_name).operations:
            table.setdefault(operation.action, operation)
    return table


@cache
def operations_by_input() -> dict[str, Operation]:
    """Per-noun operations by the local name of their input element (first WSDL wins)."""
    table: dict[str, Operation] = {}
    for name in (*DEFAULT_SERVICES, *(n.removesuffix(".wsdl") for n in schema_names(".wsdl"))):
        for operation in read_wsdl(f"{name}.wsdl").operations:
            table.setdefault(operation.input_local, operation)
    return table


class DispatchError(Exception):
    """The request names no operation of this service, or its SOAPAction contradicts it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


GENERIC_ROOTS = frozenset({"RequestMessage", "EventMessage", "Message"})


def header_verb_noun(body_root: etree._Element) -> tuple[str | None, str | None]:
    """Verb (lower case) and Noun of a message's Header, read without a full parse."""
    verb = noun = None
    for child in body_root:
        if ns.local_name(child.tag) == "Header":
            for field_element in child:
                local = ns.local_name(field_element.tag)
                if local == "Verb":
                    verb = (field_element.text or "").strip().lower() or None
                elif local == "Noun":
                    noun = (field_element.text or "").strip() or None
            break
    return verb, noun


def is_generic_root(body_root: etree._Element) -> bool:
    namespace, local = ns.split_tag(body_root.tag)
    return namespace in ns.MESSAGE_NAMESPACES and local in GENERIC_ROOTS


def _matches(operation: Operation, body_root: etree._Element) -> bool:
    """Whether a body fits an operation: its wrapper element, or a bare message whose Verb and
    Noun are the operation's."""
    if is_generic_root(body_root):
        if operation.verb is None:  # a generic operation: any bare message of its kind
            local = ns.local_name(body_root.tag)
            return local == ns.local_name(operation.input) or local == "Message"
        verb, noun = header_verb_noun(body_root)
        return verb == operation.verb and noun == operation.noun
    return ns.local_name(body_root.tag) == operation.input_local


def resolve(service: Service, action: str | None, body_root: etree._Element) -> Operation | None:
    """The operation a request is for. None: a bare message at the generic endpoint without a
    SOAPAction, which the router answers as it is. Raises DispatchError."""
    action = (action or "").strip().strip('"').strip()
    local = ns.local_name(body_root.tag)
    if action:
        operation = service.by_action.get(action) or service.by_action.get(
            action.rsplit("/", 1)[-1]
        )
        if operation is None and service.generic:
            operation = all_operations().get(action)
        if operation is None:
            raise DispatchError(f"SOAPAction {action!r} is not an operation of {service.name}")
        if not _matches(operation, body_root):
            raise DispatchError(f"SOAPAction {action!r} does not match the Body's {local} element")
        return operation
    # No SOAPAction: the Body's root element, then Header Verb/Noun.
    operation = service.by_input.get(local)
    if operation is not None and not is_generic_root(body_root):
        return operation
    if service.generic:
        if is_generic_root(body_root):
            return None
        operation = operations_by_input().get(local)
        if operation is not None:
            return operation
        raise DispatchError(f"the Body's {local} element is not an IEC 61968-100 message")
    if is_generic_root(body_root):
        for candidate in service.operations:
            if _matches(candidate, body_root):
                return candidate
        verb, noun = header_verb_noun(body_root)
        raise DispatchError(f"{service.name} has no operation for Verb {verb!r} and Noun {noun!r}")
    raise DispatchError(f"the Body's {local} element is not an operation of {service.name}")
