"""Where the peer lane listens and how both ends of it speak TLS.

With EXDR_PEER_URLS (`region=https://host:port;...`) each region serves its peer lane
(infra/api/peer.py) on a listener of its own, apart from the public API, with mutual TLS:
its certificate and key from EXDR_TLS_CERT/EXDR_TLS_KEY, and the callers' certificates
checked against EXDR_TLS_CA (`make certs` writes a development CA and one certificate per
region under var/certs). The leader's record pushes (peer_link.py) and the standby's direct
confirmations (infra/node/node.py) go there, verifying the server's certificate against the
same CA. Without EXDR_PEER_URLS the lane stays on the public API's port, in plain HTTP: a
development set-up only, which `exchange-dr node` warns about.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time

import uvicorn

from infra.api.errors import Receive, Scope, Send, send_json_body
from infra.api.peer import PeerAckLane
from infra.replication.peer_link import host_port
from infra.security_settings import PeerTls
from infra.settings import Region, Settings

log = logging.getLogger("exchange_dr.peer_server")


def peer_url(settings: Settings, region: Region) -> str:
    """Where `region`'s peer lane listens: its own listener if configured, else its API."""
    return settings.security.peer_urls.get(region.name, region.api_url)


def peer_url_of_api(settings: Settings, api_url: str) -> str:
    """The peer lane of the region whose public API is `api_url` (a leader's, from ZooKeeper)."""
    for region in settings.regions:
        if region.api_url == api_url.rstrip("/"):
            return peer_url(settings, region)
    return api_url


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """The peer link's client TLS: the server's certificate checked against the CA, ours shown
    to it. None without TLS settings."""
    tls = settings.security.peer_tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert), str(tls.key))
    return context


class PeerLaneApp:
    """The peer lane alone, as an ASGI app: anything else on its listener is 404."""

    def __init__(self, lane: PeerAckLane) -> None:
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.lane.takes(scope):
            await self.lane(scope, receive, send)
        elif scope["type"] == "http":
            await send_json_body(send, 404, b"")


def serve_peer_lane(
    lane: PeerAckLane, url: str, tls: PeerTls | None, *, start_timeout_s: float = 15.0
) -> uvicorn.Server:
    """Serve the lane on `url` from a thread of its own; TLS (mutual) when `url` is https."""
    host, port = host_port(url)
    options: dict[str, object] = {}
    if url.startswith("https://"):
        if tls is None:
            raise ValueError(f"peer lane {url}: https needs EXDR_TLS_CERT, _KEY and _CA")
        options = {
            "ssl_certfile": str(tls.cert),
            "ssl_keyfile": str(tls.key),
            "ssl_ca_certs": str(tls.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,  # a caller shows a certificate of our CA
        }
    config = uvicorn.Config(
        PeerLaneApp(lane),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        proxy_headers=False,
        **options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="peer-lane", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"peer lane did not start on {url}")
        time.sleep(0.02)
    log.info("peer lane on %s%s", url, " (mutual TLS)" if options else "")
    return server
