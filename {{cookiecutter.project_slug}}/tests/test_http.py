"""HTTP: health check, demo page, the WebSocket handshake's answers, listening."""

import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_PAGE = PROJECT_ROOT / "{{ cookiecutter.package_name }}" / "static" / "index.html"
DEFLATE_OFFER = {
    "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"
}


def test_healthz_reports_ok_and_the_memory_broker(start_app):
    app = start_app()
    status, headers, body = app.http("GET", "/healthz")
    assert status == 200
    assert "json" in headers.get("content-type", "")
    assert json.loads(body) == {"status": "ok", "broker": "memory", "connections": 0}


def test_healthz_reports_the_redis_broker(redis_apps):
    for app in redis_apps:
        status, body = app.healthz()
        assert status == 200
        assert body.keys() == {"status", "broker", "connections"}
        assert body["status"] == "ok"
        assert body["broker"] == "redis"
        assert isinstance(body["connections"], int)


def test_healthz_counts_open_websockets(start_app, ws_client, raw_ws, wait_until):
    app = start_app()
    clients = [ws_client(app) for _ in range(3)]
    _, _, dropped = raw_ws(app)
    wait_until(lambda: app.connections() == 4, 5, "connections to reach 4")
    clients[0].close()
    # A client gone without a close frame is counted out too.
    dropped.close()
    wait_until(lambda: app.connections() == 2, 5, "connections to drop to 2")
    assert app.healthz() == (
        200,
        {"status": "ok", "broker": "memory", "connections": 2},
    )


def test_get_ws_without_upgrade_is_a_client_error(memory_app):
    status, _, _ = memory_app.http("GET", "/ws")
    assert 400 <= status < 500


def test_root_serves_the_demo_page_when_generated_else_404(memory_app):
    status, headers, body = memory_app.http("GET", "/")
    if not DEMO_PAGE.exists():
        assert status == 404
        return
    assert status == 200
    assert headers.get("content-type", "").startswith("text/html")
    page = body.decode()
    for hook in ("status", "send", "message", "messages"):
        assert re.search(rf"""\bid=["']?{hook}["'\s>]""", page), f"no #{hook}"
    # Nothing is loaded from another host, and what the page loads is served.
    assets = re.findall(r"""<(?:script|img)\b[^>]*\bsrc=["']([^"']+)""", page)
    assets += re.findall(r"""<link\b[^>]*\bhref=["']([^"']+)""", page)
    for asset in assets:
        assert not urlsplit(asset).netloc and not asset.startswith("//"), asset
        status, _, _ = memory_app.http("GET", urljoin("/", asset))
        assert status == 200, f"{asset} answered {status}"


def listening_addresses(port: int) -> set[str] | None:
    """Local addresses (hex, as /proc shows them) of LISTEN sockets on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found if Path("/proc/net/tcp").exists() else None


def outward_ipv4() -> str | None:
    """This host's non-loopback IPv4 address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_listens_on_all_interfaces(memory_app):
    addresses = listening_addresses(memory_app.port)
    if addresses is not None:
        assert addresses & {"00000000", "0" * 32}, (
            f"port {memory_app.port} is bound to {addresses}, not all interfaces"
        )
        return
    address = outward_ipv4()
    if address is None:
        pytest.fail("cannot tell the listening interfaces: no /proc and no outward IP")
    with socket.create_connection((address, memory_app.port), timeout=5):
        pass


# ----------------------------------------------------------------------- origins


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 101),
        ({"Origin": "http://{host}"}, 101),
        ({"Origin": "https://{host}"}, 101),
        ({"Host": "demo.herokuapp.com", "Origin": "https://demo.herokuapp.com"}, 101),
        ({"Host": "demo.herokuapp.com", "Origin": "https://evil.herokuapp.com"}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
    ],
    ids=[
        "no-origin",
        "same-host",
        "same-host-https",
        "heroku-same-host",
        "heroku-other-host",
        "other-host",
        "null-origin",
    ],
)
def test_default_origin_rule_is_own_host(memory_app, raw_ws, headers, expected):
    host = f"127.0.0.1:{memory_app.port}"
    headers = {name: value.format(host=host) for name, value in headers.items()}
    status, response_headers, _ = raw_ws(memory_app, headers=headers)
    assert status == expected
    if expected != 101:
        assert "upgrade" not in response_headers.get("connection", "").lower()


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (None, 101),
        ("https://a.example", 101),
        ("https://b.example", 101),
        ("https://c.example", 403),
        ("http://a.example", 403),
        ("https://a.example:8443", 403),
    ],
)
def test_listed_origins_only(shared_app, raw_ws, origin, expected):
    app = shared_app(WS_ALLOWED_ORIGINS="https://a.example, https://b.example")
    headers = {"Origin": origin} if origin else {}
    status, _, _ = raw_ws(app, headers=headers)
    assert status == expected


@pytest.mark.parametrize("origin", [None, "https://anything.example", "null"])
def test_star_allows_any_origin(shared_app, raw_ws, origin):
    app = shared_app(WS_ALLOWED_ORIGINS="*")
    status, _, _ = raw_ws(app, headers={"Origin": origin} if origin else {})
    assert status == 101


# ---------------------------------------------------------------- connection limit


def test_handshake_past_max_connections_is_503(
    start_app, ws_client, raw_ws, wait_until
):
    app = start_app(WS_MAX_CONNECTIONS="2")
    first = ws_client(app)
    ws_client(app)
    status, headers, _ = raw_ws(app)
    assert status == 503
    assert "upgrade" not in headers.get("connection", "").lower()
    # Plain HTTP still answers at the limit.
    assert app.healthz() == (
        200,
        {"status": "ok", "broker": "memory", "connections": 2},
    )
    first.close()
    wait_until(lambda: app.connections() == 1, 5, "the closed connection to be freed")
    status, _, ws = raw_ws(app)
    assert status == 101
    ws.send_text('{"type": "ping"}')
    assert ws.recv_json() == {"type": "pong"}


# ------------------------------------------------------- echo path and compression


def test_echo_path_echoes_text_and_binary(shared_app, ws_client):
    app = shared_app(WS_ECHO_PATH="/echo")
    client = ws_client(app, "/echo")
    for message in ["héllo ☃", '{"type": "not parsed"}', b"\x00\xff\x10", b""]:
        client.ws.send(message)
        assert client.ws.recv(timeout=5) == message


def test_no_echo_path_by_default(memory_app, raw_ws):
    status, _, _ = raw_ws(memory_app, "/echo")
    assert 400 <= status < 500


def test_compression_is_off_by_default(memory_app, raw_ws):
    status, headers, _ = raw_ws(memory_app, headers=DEFLATE_OFFER)
    assert status == 101
    assert "permessage-deflate" not in headers.get("sec-websocket-extensions", "")


def test_compression_when_enabled(shared_app, raw_ws, ws_client, new_room):
    app = shared_app(WS_COMPRESSION="true")
    # Only the handshake is read here: this raw socket cannot inflate frames.
    status, headers, _ = raw_ws(app, headers=DEFLATE_OFFER, auth=False)
    assert status == 101
    assert "permessage-deflate" in headers.get("sec-websocket-extensions", "")
    # A compressing client speaks the protocol as usual.
    client = ws_client(app, compression="deflate")
    room = new_room()
    client.join(room)
    client.publish(room, {"text": "squeeze " * 100})
    assert client.message() == client.sent(room, {"text": "squeeze " * 100})


# ------------------------------------------- the same answer in every variant

PLAIN = "text/plain; charset=utf-8"
JSON = "application/json"
HTML = "text/html; charset=utf-8"
DEMO = DEMO_PAGE.exists()


@pytest.mark.parametrize(
    ("method", "path", "status", "content_type", "cache_control"),
    [
        ("GET", "/healthz", 200, JSON, "no-store"),
        ("HEAD", "/healthz", 200, JSON, "no-store"),
        ("POST", "/healthz", 405, PLAIN, "no-store"),
        ("GET", "/", 200 if DEMO else 404, HTML if DEMO else PLAIN, "no-store"),
        ("HEAD", "/", 200 if DEMO else 404, HTML if DEMO else PLAIN, "no-store"),
        (
            "GET",
            "/static/app.js",
            200 if DEMO else 404,
            "text/javascript; charset=utf-8" if DEMO else PLAIN,
            "no-store",
        ),
        (
            "GET",
            "/static/client.js",
            200 if DEMO else 404,
            "text/javascript; charset=utf-8" if DEMO else PLAIN,
            "no-store",
        ),
        (
            "GET",
            "/static/style.css",
            200 if DEMO else 404,
            "text/css; charset=utf-8" if DEMO else PLAIN,
            "no-store",
        ),
        ("GET", "/static/missing.js", 404, PLAIN, "no-store"),
        ("GET", "/missing", 404, PLAIN, "no-store"),
        ("DELETE", "/missing", 404, PLAIN, "no-store"),
        ("GET", "/ws", 426, PLAIN, "no-store"),
        ("GET", "/token", 405, PLAIN, "no-store"),
        ("POST", "/token", 400, JSON, "no-store"),  # no body: invalid_json
        ("POST", "/api/publish", 404, PLAIN, "no-store"),  # API_KEY unset
    ],
    ids=lambda value: str(value).replace("; charset=utf-8", ""),
)
def test_every_variant_answers_alike(
    memory_app, method, path, status, content_type, cache_control
):
    """Status, Content-Type and Cache-Control, exactly, whatever the framework;
    HEAD gets GET's headers and no body."""
    got, headers, body = memory_app.http(method, path)
    assert (got, headers.get("content-type"), headers.get("cache-control")) == (
        status,
        content_type,
        cache_control,
    )
    if method == "HEAD":
        assert body == b""
        _, get_headers, get_body = memory_app.http("GET", path)
        assert headers.get("content-length") == str(len(get_body))
    if status == 405:
        assert headers.get("allow") == ("POST" if path == "/token" else "GET, HEAD")
    if status == 426:  # what the path speaks (RFC 6455, section 4.4)
        assert headers.get("upgrade", "").lower() == "websocket"
        assert headers.get("sec-websocket-version") == "13"


@pytest.mark.parametrize("version", ["8", "7", "12", "14", ""])
def test_websocket_version_other_than_13_is_refused(memory_app, raw_ws, version):
    """Heroku's router speaks RFC 6455 (version 13) only: the hybi drafts, which
    aiohttp alone would accept, are refused with 400 and never upgraded."""
    status, headers, _ = raw_ws(memory_app, headers={"Sec-WebSocket-Version": version})
    assert status == 400
    assert headers.get("content-type") == PLAIN
    assert "upgrade" not in headers.get("connection", "").lower()


@pytest.mark.parametrize(
    ("path", "status", "content_type"),
    [("/elsewhere", 404, PLAIN), ("/healthz", 200, JSON)],
)
def test_handshake_on_another_path_gets_the_plain_answer(
    memory_app, raw_ws, path, status, content_type
):
    """Only WebSocket paths upgrade; elsewhere a handshake gets what a GET would."""
    got, headers, _ = raw_ws(memory_app, path)
    assert (got, headers.get("content-type")) == (status, content_type)
    assert "upgrade" not in headers.get("connection", "").lower()


def _closed_by_server(sock: socket.socket, deadline: float) -> float | None:
    """Seconds until the server closes ``sock`` (EOF or reset), None by deadline."""
    started = time.monotonic()
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return time.monotonic() - started
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def test_request_head_not_complete_within_10_s_is_dropped(memory_app):
    """A client that opens TCP and says nothing, and one that stops mid-head,
    are both dropped after 10 s (slowloris), as the contract asks of every
    variant; a complete request on the same server is still answered."""
    silent = socket.create_connection(("127.0.0.1", memory_app.port))
    partial = socket.create_connection(("127.0.0.1", memory_app.port))
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    deadline = time.monotonic() + 15
    try:
        for sock in (silent, partial):
            seconds = _closed_by_server(sock, deadline)
            assert seconds is not None, "still open after 15 s"
        # Not closed before the 10 s (2 s of slack for a loaded machine).
        assert time.monotonic() - (deadline - 15) > 8
    finally:
        silent.close()
        partial.close()
    assert memory_app.healthz()[0] == 200
