"""The SOAP edge over real HTTP on loopback: WSDL and XSD serving, dispatch, SOAP 1.1 and 1.2,
a SOAP Fault (with the OpenHES code in its detail) for every transport-level bad input, the
router's ResponseMessage for message-level ones, authentication, TLS and mutual TLS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import socket
import ssl

import httpx
import pytest
from lxml import etree
from soap_helpers import (
    SOAP11,
    SOAP12,
    control_message,
    envelope,
    get_readings_message,
    new_id,
    running_stack,
)

from adapters.soap.app import DRAIN_BYTES, create_app
from adapters.soap.server import gunicorn_options, start_in_thread
from adapters.soap.services import catalogue
from adapters.soap.settings import SoapSettings

GET_ACTION = "http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings"
CONTROL_ACTION = "http://iec.ch/TC57/2011/EndDeviceControls/CreateEndDeviceControls"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
CAP = 64 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("soap"), max_request_bytes=CAP) as running:
        yield running


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as client:
        yield client


def post(http, path, body, *, action=GET_ACTION, content_type="text/xml; charset=utf-8", **kw):
    headers = {"Content-Type": content_type, **kw.pop("headers", {})}
    if action is not None:
        headers["SOAPAction"] = f'"{action}"'
    return http.post(f"/openhes/{path}", content=body, headers=headers, **kw)


def fault_of(response, version=SOAP11):
    """(faultcode, OpenHES error code, reason) of a Fault response."""
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{version}}}Body/{{{version}}}Fault")
    assert fault is not None, response.text
    if version == SOAP11:
        code = fault.findtext("faultcode")
    else:
        code = fault.findtext(f"{{{version}}}Code/{{{version}}}Value")
    detail_code = next(fault.iter("{http://iec.ch/TC57/2011/schema/message}code")).text
    reason = next(fault.iter("{http://iec.ch/TC57/2011/schema/message}reason")).text
    return code, detail_code, reason


def reply_of(response, version=SOAP11):
    """(root local name, Result, [Error codes]) of a ResponseMessage in a SOAP response."""
    assert response.status_code == 200, response.text
    root = etree.fromstring(response.content)
    body = root.find(f"{{{version}}}Body")[0]
    result = next(body.iter("{*}Result")).text
    return etree.QName(body).localname, result, [e.text for e in body.iter("{*}code")]


# --- WSDL and XSD serving -------------------------------------------------------------------


def test_every_wsdl_is_served_with_the_address_it_was_reached_at(http, stack):
    for name in catalogue():
        for suffix in ("?wsdl", "?WSDL", ".wsdl"):
            response = http.get(f"/openhes/{name}{suffix}")
            assert response.status_code == 200, (name, suffix)
            assert response.headers["content-type"].startswith("text/xml")
            root = etree.fromstring(response.content)
            address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
            assert address.get("location") == f"{stack.url}/openhes/{name}"
    other_host = http.get("/openhes/GetMeterReadings?wsdl", headers={"Host": "hes.example:8443"})
    assert b'location="http://hes.example:8443/openhes/GetMeterReadings"' in other_host.content


def test_every_imported_schema_is_served_at_its_relative_url(http):
    pending = [f"{name}.wsdl" for name in catalogue()]
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = http.get(f"/openhes/{name}")
        assert response.status_code == 200, name
        root = etree.fromstring(response.content)
        for element in root.iter("{http://www.w3.org/2001/XMLSchema}import"):
            if element.get("schemaLocation"):
                pending.append(element.get("schemaLocation"))
    assert "Message.xsd" in seen and "MeterReadings.xsd" in seen


def test_unknown_files_services_and_methods(http):
    assert http.get("/openhes/Nope.xsd").status_code == 404
    assert http.get("/openhes/..%2Fpyproject.toml").status_code == 404
    assert http.get("/openhes/Nope?wsdl").status_code == 404
    assert http.get("/openhes/ReplyMeterReadings?wsdl").status_code == 404  # the callers' side
    assert post(http, "Nope", b"<x/>").status_code == 404
    assert http.get("/openhes/GetMeterReadings").status_code == 405
    assert http.put("/openhes/GetMeterReadings", content=b"<x/>").status_code == 405
    index = http.get("/openhes/")
    assert index.status_code == 200 and "GetMeterReadings" in index.text


# --- dispatch and answers --------------------------------------------------------------------


def test_get_meter_readings_is_answered_in_the_wsdl_output_element(http):
    response = post(http, "GetMeterReadings", envelope(get_readings_message()))
    root = etree.fromstring(response.content)
    body = root.find(f"{{{SOAP11}}}Body")[0]
    assert (
        body.tag == "{http://iec.ch/TC57/2011/GetMeterReadingsMessage}MeterReadingsResponseMessage"
    )
    assert [etree.QName(c).localname for c in body] == ["Header", "Reply", "Payload"]
    assert all(etree.QName(c).namespace == etree.QName(body).namespace for c in body)
    assert len(list(body.iter("{*}IntervalReadings"))) == 96
    assert response.headers["content-type"] == "text/xml; charset=utf-8"


def test_dispatch_without_soap_action_uses_the_body_then_verb_and_noun(http):
    wrapped = post(http, "GetMeterReadings", envelope(get_readings_message()), action=None)
    assert reply_of(wrapped)[:2] == ("MeterReadingsResponseMessage", "OK")
    empty = post(http, "GetMeterReadings", envelope(get_readings_message()), action="")
    assert reply_of(empty)[:2] == ("MeterReadingsResponseMessage", "OK")
    bare = post(http, "GetMeterReadings", envelope(get_readings_message(wrapper=None)), action=None)
    assert reply_of(bare)[:2] == ("ResponseMessage", "OK")  # answered as it was asked
    by_name = post(
        http, "GetMeterReadings", envelope(get_readings_message()), action="GetMeterReadings"
    )
    assert reply_of(by_name)[:2] == ("MeterReadingsResponseMessage", "OK")


def test_generic_endpoint(http):
    bare = envelope(get_readings_message(wrapper=None))
    for action in (None, "http://iec.ch/TC57/2011/schema/message/Request", GET_ACTION):
        assert reply_of(post(http, "Generic", bare, action=action))[:2] == ("ResponseMessage", "OK")
    wrapped = post(http, "Generic", envelope(get_readings_message()), action=None)
    assert reply_of(wrapped)[:2] == ("MeterReadingsResponseMessage", "OK")
    ack = post(
        http,
        "Generic",
        envelope(control_message(wrapper=None, reply_address="http://127.0.0.1:9/r")),
        action=None,
    )
    assert reply_of(ack)[:2] == ("ResponseMessage", "OK")


def test_soap_12(http):
    body = envelope(get_readings_message(), SOAP12)
    response = post(
        http, "GetMeterReadings", body, action=None,
        content_type=f'application/soap+xml; charset=utf-8; action="{GET_ACTION}"',
    )  # fmt: skip
    assert response.headers["content-type"] == "application/soap+xml; charset=utf-8"
    assert reply_of(response, SOAP12)[:2] == ("MeterReadingsResponseMessage", "OK")
    wrong_action = post(
        http, "GetMeterReadings", body, action=None,
        content_type=f'application/soap+xml; action="{CONTROL_ACTION}"',
    )  # fmt: skip
    assert wrong_action.status_code == 400
    code, error, _ = fault_of(wrong_action, SOAP12)
    assert (code, error) == ("soap:Sender", "3.3")
    not_xml = post(http, "GetMeterReadings", b"{}", content_type="application/soap+xml")
    assert not_xml.status_code == 400 and fault_of(not_xml, SOAP12)[1] == "1.1"


# --- transport-level bad input: SOAP Faults ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"this is not XML", "1.1"),
        (b"", "1.1"),
        (b"<a><b></a>", "1.1"),
        (b'<?xml version="1.0" encoding="UTF-8"?><a>\xff\xfe</a>', "1.2"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
         b'<s:Envelope xmlns:s="' + SOAP11.encode() + b'"><s:Body><x>&e;</x></s:Body></s:Envelope>',
         "1.3"),
        (b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
         b"<lolz>&lol2;</lolz>", "1.3"),
        (b'<!DOCTYPE s:Envelope SYSTEM "http://127.0.0.1:9/x.dtd"><s:Envelope xmlns:s="'
         + SOAP11.encode() + b'"/>', "1.3"),
        (b"<a>" * 100 + b"</a>" * 100, "1.5"),
        (get_readings_message(), "1.8"),  # a bare message, not a SOAP Envelope
        (b'<s:Envelope xmlns:s="' + SOAP11.encode() + b'"><s:Header/></s:Envelope>', "2.6"),
        (b'<s:Envelope xmlns:s="' + SOAP11.encode() + b'"><s:Body/></s:Envelope>', "2.6"),
        (envelope(b"<s:Fault xmlns:s='" + SOAP11.encode() + b"'><faultcode>x</faultcode></s:Fault>"),
         "1.8"),
    ],
    ids=["text", "empty", "unbalanced", "encoding", "xxe", "laughs", "dtd", "deep", "bare",
         "no-body", "empty-body", "fault"],
)  # fmt: skip
def test_malformed_and_hostile_xml_is_a_client_fault(http, body, error):
    response = post(http, "GetMeterReadings", body)
    assert response.status_code == 500
    code, detail_code, reason = fault_of(response)
    assert (code, detail_code) == ("soap:Client", error), reason
    assert b"root:" not in response.content  # nothing of /etc/passwd


def test_fault_detail_is_the_service_fault_message(http):
    response = post(http, "ExecuteEndDeviceControls", b"nope", action=CONTROL_ACTION)
    root = etree.fromstring(response.content)
    detail = root.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault/detail")[0]
    assert (
        detail.tag
        == "{http://iec.ch/TC57/2011/EndDeviceControlsMessage}EndDeviceControlsFaultMessage"
    )
    generic = etree.fromstring(post(http, "Generic", b"nope", action=None).content)
    assert (
        generic.find(".//detail/{http://iec.ch/TC57/2011/schema/message}FaultMessage") is not None
    )


@pytest.mark.parametrize("content_type", ["application/json", "", "text/plain", "application/xml"])
def test_a_content_type_that_is_not_soap_is_415(http, content_type):
    response = post(
        http, "GetMeterReadings", envelope(get_readings_message()), content_type=content_type
    )
    assert response.status_code == 415
    assert fault_of(response)[0] == "soap:Client"


def test_soap_version_must_match_the_content_type(http):
    response = post(http, "GetMeterReadings", envelope(get_readings_message(), SOAP12))
    assert response.status_code == 500
    assert fault_of(response)[0] == "soap:VersionMismatch"


def test_too_large_by_content_length_and_by_streamed_count(http, stack):
    big = envelope(get_readings_message()).replace(b"<s:Body>", b"<s:Body>" + b" " * CAP)
    response = post(http, "GetMeterReadings", big)
    assert response.status_code == 413
    assert fault_of(response)[1] == "1.4"

    def chunks():
        yield big[:1000]
        yield big[1000:]

    streamed = post(http, "GetMeterReadings", chunks())  # chunked: no Content-Length
    assert streamed.status_code == 413
    assert fault_of(streamed)[1] == "1.4"
    # The server is still there afterwards.
    assert reply_of(post(http, "GetMeterReadings", envelope(get_readings_message())))[1] == "OK"


def test_a_lying_or_invalid_content_length(stack):
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /openhes/GetMeterReadings HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
            b"Content-Length: " + str(CAP + DRAIN_BYTES + 1).encode() + b"\r\n\r\n<s:Envelope"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")  # refused before the body was sent


@pytest.mark.parametrize(
    ("path", "body", "action"),
    [
        ("GetMeterReadings", envelope(get_readings_message()), CONTROL_ACTION),  # mismatch
        ("GetMeterReadings", envelope(get_readings_message()), "urn:nothing"),  # unknown
        ("GetMeterReadings", envelope(control_message()), None),  # not an operation here
        ("ExecuteEndDeviceControls", envelope(control_message(wrapper=None, verb="get")), None),
        ("Generic", envelope(b"<x xmlns='urn:other'/>"), None),
        ("Generic", envelope(get_readings_message(wrapper=None)), CONTROL_ACTION),
    ],
    ids=["mismatch", "unknown-action", "wrong-service", "verb-noun", "generic-foreign", "generic-mismatch"],
)  # fmt: skip
def test_dispatch_failures_are_client_faults(http, path, body, action):
    response = post(http, path, body, action=action)
    assert response.status_code == 500
    assert fault_of(response)[:2] == ("soap:Client", "3.3")


# --- message-level bad input: the router's ResponseMessage -------------------------------------


def test_message_level_problems_are_failed_response_messages(http):
    no_verb = get_readings_message(wrapper=None).replace(
        b"<Verb>get</Verb>", b""
    )  # the bare form writes the message namespace as default
    assert b"<Verb>" not in no_verb
    assert reply_of(post(http, "Generic", envelope(no_verb), action=None))[1:] == (
        "FAILED",
        ["1.6"],
    )
    unknown_noun = get_readings_message(wrapper=None).replace(
        b"<Noun>MeterReadings</Noun>", b"<Noun>Nonsense</Noun>"
    )
    assert reply_of(post(http, "Generic", envelope(unknown_noun), action=None))[1:] == (
        "FAILED",
        ["3.1"],
    )
    foreign = envelope(get_readings_message(wrapper=None)).replace(
        b"http://iec.ch/TC57/2011/schema/message", b"urn:not-iec"
    )
    response = post(
        http, "Generic", foreign, action="http://iec.ch/TC57/2011/schema/message/Request"
    )
    assert reply_of(response)[1:] == ("FAILED", ["1.8"])
    unknown_meter = get_readings_message(mrid="NOPE")
    assert reply_of(post(http, "GetMeterReadings", envelope(unknown_meter)))[1:] == (
        "FAILED",
        ["4.1"],
    )


def test_duplicate_message_id_runs_once(http):
    message_id = new_id()
    first = post(
        http,
        "ExecuteEndDeviceControls",
        envelope(control_message("M2", message_id=message_id)),
        action=CONTROL_ACTION,
    )
    again = post(http, "ExecuteEndDeviceControls", envelope(control_message("M2", message_id=message_id)),
                 action=CONTROL_ACTION)  # fmt: skip
    assert reply_of(first)[1] == "OK"
    assert first.content.split(b"<Header>")[1] == again.content.split(b"<Header>")[1]


# --- authentication ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with (
        running_stack(tmp_path_factory.mktemp("auth"), authenticate=True) as running,
        httpx.Client(base_url=running.url, timeout=20) as client,
    ):
        yield client


def basic(name, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def token(name, password, *, digest=False, nonce=None, created=None):
    nonce = nonce or os.urandom(16)
    created = created or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if digest:
        value = base64.b64encode(
            hashlib.sha1(nonce + created.encode() + password.encode()).digest()
        )
        kind = "PasswordDigest"
    else:
        value, kind = password.encode(), "PasswordText"
    profile = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{name}</wsse:Username>"
        f'<wsse:Password Type="{profile}#{kind}">{value.decode()}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    ).encode()


def test_basic_authentication(secured):
    body = envelope(get_readings_message())
    missing = post(secured, "GetMeterReadings", body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith('Basic realm="OpenHES"')
    assert fault_of(missing)[1] == "5.1"
    wrong = post(secured, "GetMeterReadings", body, headers=basic("reader", "nope"))
    assert wrong.status_code == 401 and fault_of(wrong)[1] == "5.1"
    good = post(secured, "GetMeterReadings", body, headers=basic("reader", "reader-pw"))
    assert reply_of(good)[1] == "OK"
    control = post(secured, "ExecuteEndDeviceControls", envelope(control_message()),
                   action=CONTROL_ACTION, headers=basic("reader", "reader-pw"))  # fmt: skip
    assert reply_of(control)[1:] == ("FAILED", ["5.2"])  # authorisation is the router's


def test_ws_security_failures_are_wsse_faults(secured):
    good = envelope(get_readings_message(), header=token("reader", "reader-pw"))
    assert reply_of(post(secured, "GetMeterReadings", good))[1] == "OK"
    bad = post(
        secured, "GetMeterReadings", envelope(get_readings_message(), header=token("reader", "x"))
    )
    assert bad.status_code == 500
    code, error, _ = fault_of(bad)
    assert code == "sub:FailedAuthentication" and error == "5.1"
    assert f'xmlns:sub="{WSSE}"'.encode() in bad.content
    nonce = os.urandom(16)
    once = envelope(
        get_readings_message(), header=token("reader", "reader-pw", digest=True, nonce=nonce)
    )
    assert reply_of(post(secured, "GetMeterReadings", once))[1] == "OK"
    replayed = post(secured, "GetMeterReadings", once)
    assert fault_of(replayed)[:2] == ("sub:FailedAuthentication", "5.3")
    soap12 = post(
        secured, "GetMeterReadings",
        envelope(get_readings_message(), SOAP12, header=token("reader", "x")),
        content_type="application/soap+xml",
    )  # fmt: skip
    assert soap12.status_code == 400
    assert b"<soap:Subcode><soap:Value>sub:FailedAuthentication" in soap12.content


def test_a_must_understand_security_header_with_a_signature(secured):
    header = (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:s="{SOAP11}" s:mustUnderstand="1">'
        '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></wsse:Security>'
    ).encode()
    response = post(secured, "GetMeterReadings", envelope(get_readings_message(), header=header))
    assert response.status_code == 500
    assert fault_of(response)[0] == "soap:MustUnderstand"


# --- TLS, mutual TLS, settings -----------------------------------------------------------------


def _certificates(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def issue(name, issuer_key=None, issuer_name=None, ca=False, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    def write(stem, key, cert):
        (tmp_path / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (tmp_path / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(tmp_path / f"{stem}.pem"), str(tmp_path / f"{stem}.key")

    import ipaddress

    ca_key, ca_cert = issue("OpenHES test CA", ca=True)
    server = issue("127.0.0.1", ca_key, ca_cert.subject,
                   san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])  # fmt: skip
    client = issue("mdm-client", ca_key, ca_cert.subject)
    ca_path, _ = write("ca", ca_key, ca_cert)
    return ca_path, write("server", *server), write("client", *client)


def test_tls_and_mutual_tls(tmp_path, stack):
    ca, (cert, key), (client_cert, client_key) = _certificates(tmp_path)
    app = create_app(stack.router, None, SoapSettings())
    settings = SoapSettings(certfile=cert, keyfile=key)
    url, stop = start_in_thread(app, settings=settings)
    try:
        assert url.startswith("https://")
        with httpx.Client(verify=ssl.create_default_context(cafile=ca)) as client:
            assert (
                client.get(f"{url}/openhes/GetMeterReadings?wsdl").content.count(
                    f'location="{url}/openhes/GetMeterReadings"'.encode()
                )
                == 1
            )
    finally:
        stop()
    mutual = SoapSettings(certfile=cert, keyfile=key, client_ca=ca)
    url, stop = start_in_thread(app, settings=mutual)
    try:
        anonymous = ssl.create_default_context(cafile=ca)
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=anonymous) as client:
            client.get(f"{url}/openhes/")
        identified = ssl.create_default_context(cafile=ca)
        identified.load_cert_chain(client_cert, client_key)
        with httpx.Client(verify=identified, base_url=url) as client:
            assert client.get("/openhes/").status_code == 200
            assert (
                reply_of(post(client, "GetMeterReadings", envelope(get_readings_message())))[1]
                == "OK"
            )
    finally:
        stop()


def test_settings_are_checked_and_become_gunicorn_options():
    with pytest.raises(ValueError):
        SoapSettings(workers=0)
    with pytest.raises(ValueError):
        SoapSettings(certfile="c.pem")
    with pytest.raises(ValueError):
        SoapSettings(client_ca="ca.pem")
    with pytest.raises(ValueError):
        SoapSettings(base_path="openhes/")
    options = gunicorn_options(
        SoapSettings(host="::1", port=8443, workers=2, certfile="c", keyfile="k", client_ca="ca")
    )
    assert options["bind"] == "[::1]:8443"
    assert options["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert options["workers"] == 2
    assert options["cert_reqs"] == ssl.CERT_REQUIRED and options["ca_certs"] == "ca"
