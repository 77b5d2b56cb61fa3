"""Is the Hugging Face hub reachable? Asked once per process, in about two seconds at most.

Without a network, and with ``HF_HUB_OFFLINE`` unset, ``transformers`` and ``datasets`` retry every
request with back-off: an unknown ``org/name`` took 53 s (a model) or 27 s (a dataset) to fail.
:func:`offline_if_unreachable` first tries one TCP connection to the hub (or to the HTTPS proxy, when
one is set); when that fails, it switches the libraries' own offline mode on for the duration of the
load, so a model or dataset in the local Hugging Face cache still loads, and anything else fails at
once, with a note saying why.

``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE`` / ``HF_DATASETS_OFFLINE``) skips the check: the
libraries are offline already.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
_cache: dict[tuple[str, int], bool] = {}


def offline_by_env() -> bool:
    """The user switched the hub libraries offline (``HF_HUB_OFFLINE=1`` and friends)."""
    return any((os.environ.get(v) or "").strip().upper() in _TRUE for v in OFFLINE_VARS)


def hub_address() -> tuple[str, int]:
    """``(host, port)`` that a hub request connects to first: the HTTPS proxy if one applies, else the hub."""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == "https" else 80)
    return host, port


def hub_reachable(timeout: float = TIMEOUT_S) -> bool:
    """One TCP connection to :func:`hub_address`, bounded by ``timeout`` (name lookup included); cached."""
    addr = hub_address()
    if addr not in _cache:
        ok: list[bool] = []

        def attempt() -> None:
            try:
                socket.create_connection(addr, timeout=timeout).close()
                ok.append(True)
            except Exception:  # noqa: BLE001 - no name, refused, timed out: not reachable
                ok.append(False)

        # a thread, so that a name lookup that hangs (getaddrinfo ignores timeouts) is bounded too
        t = threading.Thread(target=attempt, name="datadiet-hub-check", daemon=True)
        t.start()
        t.join(timeout)
        _cache[addr] = bool(ok and ok[0])
        log.debug("hub check: %s:%d %s", *addr, "reachable" if _cache[addr] else f"unreachable within {timeout:g} s")
    return _cache[addr]


@contextmanager
def offline_if_unreachable() -> Iterator[str | None]:
    """Load from the hub inside this block; without a network, from the local cache only, at once.

    Yields ``None`` when the hub can be tried as usual (or the user set offline mode already), else a
    note for the error message: the hub could not be reached, so only the local cache was looked at.
    """
    if offline_by_env() or hub_reachable():
        yield None
        return
    host, port = hub_address()
    note = (f"{host}:{port} could not be reached (no network? one connection attempt, {TIMEOUT_S:g} s at most), so "
            "only the local Hugging Face cache was looked at")
    log.info("%s; set HF_HUB_OFFLINE=1 to skip this check", note)
    try:  # the libraries' own offline switches: huggingface_hub's (transformers reads it), and datasets' copy
        import huggingface_hub.constants
    except ImportError:  # no hub library: nothing to switch, the loader reports the missing package
        yield note
        return
    switches = [m for m in (huggingface_hub.constants, sys.modules.get("datasets.config"))
                if m is not None and hasattr(m, "HF_HUB_OFFLINE")]
    before = [m.HF_HUB_OFFLINE for m in switches]
    for m in switches:
        m.HF_HUB_OFFLINE = True
    try:
        yield note
    finally:
        for m, b in zip(switches, before):
            m.HF_HUB_OFFLINE = b
