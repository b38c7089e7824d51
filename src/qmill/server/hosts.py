"""Cross-site requests: which Host a request may name, which Origin may change state.

With auth off (the local ``make run``) the API's only protection from the web pages a
user visits is the browser's same-origin policy, and two holes get around it:

* DNS rebinding: a page on ``evil.example`` re-resolves its own name to 127.0.0.1 and
  then reads the API as same-origin. Its requests still say ``Host: evil.example``, so
  every request must name a host of ``[server] allowed_hosts`` (421 otherwise).
* Cross-site writes: a page may POST ``text/plain`` or a form anywhere without a CORS
  preflight. Bodies must be ``application/json`` (`qmill.server.http.read_json`, 415),
  which a page cannot send cross-site without one; as a second line, a POST or DELETE
  whose ``Origin`` names a host outside the list is refused (403).

The loopback names are always allowed. Hosts are compared by name, without the port (as
Django's ALLOWED_HOSTS), because proxies differ in whether they pass it on (nginx's
``$host`` drops it). ``*`` allows any host: deployments behind a load balancer with auth
on use it, since there a key, which a foreign page cannot attach without a preflight, is
what guards the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from qmill.server.config import ServerSettings
from qmill.server.errors import ForeignOrigin, MisdirectedRequest

WILDCARD = "*"
# Always allowed: a browser addresses these only to the machine it runs on (it resolves
# "localhost" itself), so a page of another site cannot make them its Host; and health
# probes inside a container or pod use them.
LOOPBACK = ("localhost", "127.0.0.1", "::1")
# Addresses that mean "every interface": a bind address, never a name a client uses.
_BIND_ALL = frozenset({"0.0.0.0", "::", ""})
# Methods that only read; every other one (POST, DELETE) must come from an allowed origin.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# "name", "name:port", "[v6]" or "[v6]:port" (RFC 9110 section 7.2).
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[^:\[\]@/\s]+))(?::[0-9]*)?")


def host_name(value: str) -> str | None:
    """The host name a Host header value names, lowercase, or None when it is malformed."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        return None
    return (match.group("v6") or match.group("name")).lower().rstrip(".")


def normalize(entry: str) -> str:
    """A configured host as `host_name` reads one: lowercase, no brackets, no port."""
    entry = entry.strip().lower()
    if entry == WILDCARD or entry.startswith("."):
        return entry
    name = host_name(entry)
    if name is None:
        name = entry.strip("[]")  # a bare IPv6 address ("::1") has colons but no port
    return name


def allowed(name: str, entries: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``entries``: equal, ``*``, or under a ``.domain`` entry."""
    for entry in entries:
        if entry in (WILDCARD, name):
            return True
        if entry.startswith(".") and (name == entry[1:] or name.endswith(entry)):
            return True
    return False


def allowed_names(server: ServerSettings) -> tuple[str, ...]:
    """The loopback names, ``[server] allowed_hosts``, and ``[server] host`` itself
    unless it binds all interfaces."""
    names = [*LOOPBACK, *(normalize(entry) for entry in server.allowed_hosts)]
    own = normalize(server.host)
    if own not in _BIND_ALL:
        names.append(own)
    return tuple(dict.fromkeys(names))


def check(method: str, headers: Mapping[str, str], server: ServerSettings) -> None:
    """Raise MisdirectedRequest (421) or ForeignOrigin (403); return if the request may go on.

    A request without Host (HTTP/1.0) is not refused: no browser sends one, and DNS
    rebinding needs a browser.
    """
    names = allowed_names(server)
    if WILDCARD in names:
        return
    host = headers.get("host")
    if host is not None:
        name = host_name(host)
        if name is None or not allowed(name, names):
            raise MisdirectedRequest(host)
    origin = headers.get("origin")
    if origin is not None and method not in _SAFE_METHODS:
        origin_name = _origin_name(origin)
        if origin_name is None or not allowed(origin_name, names):
            raise ForeignOrigin(origin)


def _origin_name(origin: str) -> str | None:
    """The host of an Origin header (``scheme://host[:port]``); None for ``null`` or junk."""
    try:
        parts = urlsplit(origin.strip())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.rstrip(".")
