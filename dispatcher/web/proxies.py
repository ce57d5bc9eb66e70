"""Who the client is behind a reverse proxy: `[web] trusted_proxies` and `X-Forwarded-For`.

Behind nginx every request comes from the proxy's address, which would make the audit log's
"from where" and the per-address login lock-out useless. A proxy we trust appends the address it
saw to `X-Forwarded-For`; anyone else can write that header too, so it is read only when the
peer is a trusted proxy, and only from the right, as far as the hops are trusted proxies: the
first address that is not one is the client (what a trusted proxy says it saw).
"""

from __future__ import annotations

import functools
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from starlette.requests import Request

Networks = tuple[IPv4Network | IPv6Network, ...]


@functools.cache
def _networks(written: tuple[str, ...]) -> Networks:
    return tuple(ip_network(text, strict=False) for text in written)


def _trusted(address: str, networks: Networks) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False  # not an address (a test client's name, garbage in a header): never trusted
    return any(parsed in network for network in networks)


def client_address(request: Request) -> str | None:
    """The client's address: the peer's, or the one a trusted proxy forwarded (None when unknown)."""
    peer = request.client.host if request.client else None
    networks = _networks(tuple(request.app.state.settings.web.trusted_proxies))
    if peer is None or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for field in request.headers.getlist("x-forwarded-for") for hop in field.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _trusted(hop, networks):
            return hop if _is_address(hop) else peer
    return peer  # every hop is a proxy of ours (or none was given): the nearest is what we know


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
