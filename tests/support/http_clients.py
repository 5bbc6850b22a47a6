"""One SSL context for every httpx client the tests make.

httpx builds a new SSL context for each client (``create_ssl_context``: it parses the whole
CA bundle, about 20 ms), so each module-level ``httpx.get``/``httpx.post`` pays that before it
sends a byte. The tests make thousands of such calls, all plain HTTP to 127.0.0.1, where
the context is never used: sharing one context for the default settings (verify on, no
client certificate) takes about 0.2 ms instead. An ``ssl.SSLContext`` may be shared by
many connections; any other ``verify``/``cert`` still gets a context of its own.
"""

import ssl
from typing import Any

import httpx._transports.default as transports

_create = transports.create_ssl_context
_shared: dict[bool, ssl.SSLContext] = {}


def _shared_default_context(
    verify: Any = True, cert: Any = None, trust_env: bool = True
) -> ssl.SSLContext:
    if verify is not True or cert is not None:
        return _create(verify=verify, cert=cert, trust_env=trust_env)
    if trust_env not in _shared:
        _shared[trust_env] = _create(verify=verify, cert=cert, trust_env=trust_env)
    return _shared[trust_env]


def share_ssl_contexts() -> None:
    transports.create_ssl_context = _shared_default_context  # type: ignore[assignment]
