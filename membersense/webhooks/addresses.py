"""Where a webhook may send: the SSRF guard.

A webhook URL is chosen by whoever holds a session, and MemberSense's server
posts to it: without a guard, a client could make the server reach what only
the server can (a cloud metadata endpoint, an admin port on localhost, the
private network). So a URL must be ``http`` or ``https``, carry no
credentials, and its host must resolve only to public unicast addresses:
loopback, private, link-local, multicast, reserved, shared (CGNAT) and
unspecified addresses are refused, IPv4 ones inside IPv6 too.

The check runs at registration and again at every delivery, where it is part
of connecting: :class:`GuardedResolver` is the aiohttp resolver of the
delivery session, so the addresses it checked are the very ones aiohttp
connects to (no DNS-rebinding gap between check and use), and IP literals,
which aiohttp never resolves, are checked by :func:`check_literal` first.
Redirects are never followed and no proxy from the environment is used.
``WEBHOOK_ALLOW_PRIVATE=1`` lifts the address check (for tests and private
networks that mean it); the URL rules stay.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

__all__ = [
    "MAX_URL_LENGTH",
    "BlockedAddress",
    "GuardedResolver",
    "check_literal",
    "check_url",
    "forbidden",
    "resolve_checked",
]

#: The longest URL a subscription may have.
MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(OSError):
    """A webhook's host is, or resolves to, an address it may not reach.

    An ``OSError``, so aiohttp reports it from a resolver as a connection
    error (``ClientConnectorDNSError``) whose ``os_error`` it is.
    """

    def __init__(self) -> None:
        super().__init__("the URL's host is a private or reserved address")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def forbidden(address: str | IPAddress) -> bool:
    """Whether a webhook may not be sent to this IP address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and forbidden(inner):
            return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url(raw: object) -> URL:
    """A webhook URL, parsed; ``ValueError`` with a message for the client otherwise."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_URL_LENGTH:
        raise ValueError(f"url must be an http or https URL of at most {MAX_URL_LENGTH} characters")
    try:
        url = URL(raw)
        host, port = url.host, url.port  # yarl checks the port when asked for it
    except (ValueError, TypeError):
        raise ValueError("url must be an http or https URL") from None
    if url.scheme not in ("http", "https") or not host or port is None:
        raise ValueError("url must be an http or https URL")
    if url.user is not None or url.password is not None:
        raise ValueError("url must not carry a user name or password")
    return url


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_literal(host: str) -> bool:
    """True when *host* is an IP address (raises :class:`BlockedAddress` if forbidden);
    False for a name, which :class:`GuardedResolver` checks."""
    ip = _literal(host)
    if ip is None:
        return False
    if forbidden(ip):
        raise BlockedAddress()
    return True


class GuardedResolver(AbstractResolver):
    """aiohttp's threaded resolver, refusing names that resolve to a forbidden address.

    Built on the event loop it resolves for.
    """

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The host's addresses, all of them allowed; :class:`BlockedAddress` otherwise."""
        results = await self._inner.resolve(host, port, family)
        if any(forbidden(result["host"]) for result in results):
            raise BlockedAddress()
        return results

    async def close(self) -> None:
        """Nothing to release beyond the inner resolver."""
        await self._inner.close()


async def resolve_checked(url: URL) -> None:
    """Check a URL's host as a delivery would (on the event loop): :class:`BlockedAddress`
    when forbidden, ``OSError`` when it does not resolve."""
    assert url.host is not None and url.port is not None
    if not check_literal(url.host):
        await GuardedResolver().resolve(url.host, url.port, socket.AF_UNSPEC)
