"""The webhook SSRF guard: ``WebhookSecurityConfig`` stored in Redis and applied to every
subscription URL on create and update, and again to the resolved address at delivery time
(so a DNS answer that changed after validation cannot reach a blocked network)."""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from urllib.parse import urlsplit

import orjson

from runcycles_server_lite.errors import invalid
from runcycles_server_lite.store import Store

from .models import SecurityConfig


def _key(store: Store) -> str:
    return f"{store.keys.prefix}:config:webhook-security"


async def load(store: Store) -> SecurityConfig:
    raw = await store.redis.get(_key(store))
    if not raw:
        return SecurityConfig()
    return SecurityConfig.model_validate(orjson.loads(raw))


async def save(store: Store, config: SecurityConfig) -> SecurityConfig:
    for cidr in config.blocked_cidr_ranges:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise invalid(f"blocked_cidr_ranges: {cidr!r} is not a CIDR range") from None
    await store.redis.set(_key(store), orjson.dumps(config.model_dump()))
    return config


def _blocked(addr: str, config: SecurityConfig) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    for cidr in config.blocked_cidr_ranges:
        net = ipaddress.ip_network(cidr, strict=False)
        if ip.version == net.version and ip in net:
            return True
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None and net.version == 4 and mapped in net:
            return True
    return False


async def check_url(url: str, config: SecurityConfig) -> str | None:
    """Why ``url`` may not receive webhooks under ``config``, or None if it may."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "url must be an absolute http(s) URL"
    if parts.scheme == "http" and not config.allow_http:
        return "url must use https (allow_http is off in the webhook security config)"
    if config.allowed_url_patterns and not any(
        fnmatch.fnmatchcase(url, p) for p in config.allowed_url_patterns
    ):
        return "url matches none of the allowed_url_patterns"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "url has an invalid port"
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        return f"url host {parts.hostname} does not resolve"
    for info in infos:
        addr = str(info[4][0])
        if _blocked(addr, config):
            return f"url host {parts.hostname} resolves to {addr}, a blocked address"
    return None


async def validate_url(store: Store, url: str) -> None:
    """400 INVALID_REQUEST if ``url`` is refused by the stored security config."""
    reason = await check_url(url, await load(store))
    if reason is not None:
        raise invalid(reason, field="url")
