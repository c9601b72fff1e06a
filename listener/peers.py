"""Who may connect to the listener's ports: the peer-address allow-list and the TLS context.

Shared by both ways in, the DICOM port (``listener.scp``, whose association server in
``listener.transport`` applies the allow-list right after ``accept()``) and STOW-RS
(``listener.dicomweb``), so that ``allowed_hosts`` and ``tls_*`` mean the same on each.
Who may import: the listener's modules; it imports only the kernel's errors and settings.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence

from onfh_dlr.errors import ConfigurationError
from onfh_dlr.settings import Settings

#: An ``allowed_hosts`` entry, parsed.
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allowed_hosts(hosts: Sequence[str]) -> tuple[Network, ...]:
    """IP networks from ``allowed_hosts`` entries (addresses or CIDR networks).

    Raises
    ------
    ConfigurationError
        If an entry is neither an IP address nor a network.
    """
    networks = []
    for entry in hosts:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"allowed_hosts entry {entry!r} is not an IP address or network"
            ) from exc
    return tuple(networks)


def host_allowed(address: str, networks: Sequence[Network]) -> bool:
    """Whether a peer address lies in one of ``networks`` (empty = any address)."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def build_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context the settings ask for, or None for plain TCP.

    Raises
    ------
    ConfigurationError
        If only one of certificate and key is given, a CA without them, or a file cannot
        be loaded.
    """
    cert, key, ca = settings.tls_cert, settings.tls_key, settings.tls_ca
    if cert is None and key is None:
        if ca is not None:
            raise ConfigurationError("tls_ca is set but tls_cert and tls_key are not")
        return None
    if cert is None or key is None:
        raise ConfigurationError("TLS needs both tls_cert and tls_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
        if ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load TLS certificate, key or CA: {exc}") from exc
    return context


__all__ = ["Network", "build_ssl_context", "host_allowed", "parse_allowed_hosts"]
