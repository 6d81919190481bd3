"""Which ``Host`` headers the dashboard answers (DNS-rebinding protection).

A page on ``evil.example`` whose DNS name is re-pointed at ``127.0.0.1`` talks to a
dashboard on loopback as if it were its own origin: the browser sends ``Host:
evil.example`` and a matching ``Origin``, so the same-origin checks pass. Refusing host
names the dashboard was not configured for closes that door.

Names are compared case-insensitively, without the port and without a trailing dot.
An allow-list entry is one of:

- an exact name or address: ``jobs.example.com``, ``127.0.0.1``, ``::1`` (or ``[::1]``);
- a leading-dot wildcard: ``.example.com`` matches ``example.com`` and every subdomain
  (``a.example.com``, ``a.b.example.com``), like Django's ``ALLOWED_HOSTS`` and
  Flask's ``TRUSTED_HOSTS``;
- ``*``: any host (the check is off).

Entries carry no port (``localhost:8080`` is refused as a mistake: ports are ignored).
A request without a ``Host`` header (HTTP/1.0) or with a malformed one matches nothing
but ``*``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from dataqueue.errors import ConfigurationError

#: What a dashboard answers when nobody configured its host names.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: The allow-list entry that turns the check off.
ANY_HOST = "*"
#: Bind addresses that listen on every interface.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})

# A DNS name or IPv4 address (underscores occur in real container and LAN names), or a
# bracketed IPv6 literal; then an optional port. Applied to lower-cased text.
_HOST_HEADER = re.compile(r"([a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.ASCII)
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", re.ASCII)


def host_of(header: str | None) -> str | None:
    """The host name in a ``Host`` header value, normalised for comparison, or None.

    ``Jobs.Example.COM.:8080`` -> ``jobs.example.com``; ``[::1]:8080`` -> ``::1``
    (IPv6 in its compressed form). None for a missing, empty or malformed value.
    """
    if not header:
        return None
    match = _HOST_HEADER.fullmatch(header.strip().lower())
    if match is None:
        return None
    name = match.group(1)
    if name.startswith("["):
        return _ipv6(name[1:-1])
    name = name.removesuffix(".")
    return name if _NAME.fullmatch(name) else None


def normalize_host_name(entry: str) -> str:
    """An allow-list entry in the form :class:`AllowedHosts` compares.

    Lower case, IDNA-encoded, brackets and trailing dot dropped; ``*`` and a leading
    dot are kept. Raises :class:`~dataqueue.errors.ConfigurationError` for anything
    that is not a host name, address, ``.domain`` wildcard or ``*`` (a port included).
    """
    if not isinstance(entry, str):
        raise ConfigurationError(f"allowed host names must be strings, got {entry!r}")
    name = entry.strip().lower()
    if name == ANY_HOST:
        return name
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if bare.count(":") >= 2:
        address = _ipv6(bare)
        if address is None:
            raise ConfigurationError(f"allowed host {entry!r} is not a valid IPv6 address")
        return address
    if ":" in name:
        raise ConfigurationError(
            f"allowed host {entry!r} has a port; give the name alone (ports are ignored)"
        )
    wildcard, domain = name.startswith("."), name.removeprefix(".").removesuffix(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigurationError(f"allowed host {entry!r} is not a valid host name") from None
    if not _NAME.fullmatch(domain):
        raise ConfigurationError(
            f"allowed host {entry!r} is not a host name, an address, '.domain' or '*'"
        )
    return "." + domain if wildcard else domain


def _ipv6(text: str) -> str | None:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


class AllowedHosts:
    """An immutable allow-list of host names (see the module docstring for the rules).

    Raises :class:`TypeError` for a single string (a common slip for a one-item list)
    and :class:`~dataqueue.errors.ConfigurationError` for a malformed or empty list.
    """

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str | bytes):
            raise TypeError(f"allowed_hosts must be a list of host names, not a string: {names!r}")
        normalized = tuple(dict.fromkeys(normalize_host_name(name) for name in names))
        if not normalized:
            raise ConfigurationError(
                "allowed_hosts is empty, so every request would be refused; "
                "pass host names, or ['*'] to turn the check off"
            )
        self.names = normalized
        self.any_host = ANY_HOST in normalized
        self._exact = frozenset(name for name in normalized if not name.startswith("."))
        self._domains = tuple(name[1:] for name in normalized if name.startswith("."))

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header value (or None) may be answered."""
        if self.any_host:
            return True
        host = host_of(host_header)
        if host is None:
            return False
        if host in self._exact:
            return True
        return any(host == domain or host.endswith("." + domain) for domain in self._domains)

    def __repr__(self) -> str:
        return f"AllowedHosts({list(self.names)!r})"


def serving_hosts(bind_address: str, extra: Iterable[str] = ()) -> list[str]:
    """The host names a dashboard served on ``bind_address`` answers by default.

    The loopback names, plus ``bind_address`` itself; for a wildcard address
    (``0.0.0.0``, ``::``) the machine's host name instead. ``extra`` names are added
    after those. Duplicates are dropped; a host name the allow-list could not hold
    (``socket.gethostname()`` can return anything) is left out.
    """
    names = list(LOOPBACK_HOSTS)
    if bind_address.strip() in WILDCARD_ADDRESSES:
        names.append(socket.gethostname())
    else:
        names.append(bind_address)
    usable = []
    for name in names:
        try:
            usable.append(normalize_host_name(name))
        except ConfigurationError:
            continue
    usable.extend(normalize_host_name(name) for name in extra)
    return list(dict.fromkeys(usable))
