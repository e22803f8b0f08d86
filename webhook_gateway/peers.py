"""Reaching the active operator replica among several.

Every operator replica is Ready (alive), and the intake Service is headless, so its name resolves
to every replica; only the active one (kopf peering) takes events, the others answer 503. The
gateway tries the addresses in turn, the last one that worked first, and keeps to the one that
answers. This keeps `helm --wait`, Deployment availability and PodDisruptionBudgets meaningful
with several replicas, which a Service that selects only the active replica would not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from yarl import URL

#: Resolves a host and port to the IP addresses to try.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_all(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ActivePeer:
    """The addresses behind one URL, the last one that worked first."""

    def __init__(self, url: URL, resolver: Resolver = resolve_all) -> None:
        self.url = url
        self._resolver = resolver
        self._preferred: str | None = None

    async def candidates(self) -> list[URL]:
        """URLs to try, one per address (the URL itself when its host is an IP address)."""
        host = self.url.host or ""
        try:
            ipaddress.ip_address(host)
            return [self.url]
        except ValueError:
            pass
        try:
            addresses = await self._resolver(host, self.url.port or 80)
        except OSError:
            return [self.url]  # let the request itself report the failure
        if self._preferred in addresses:
            addresses.remove(self._preferred)
            addresses.insert(0, self._preferred)
        return [self.url.with_host(address) for address in addresses] or [self.url]

    def worked(self, url: URL) -> None:
        """`url` (one of `candidates`) reached the active replica: try it first next time."""
        self._preferred = url.host
