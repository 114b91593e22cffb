"""What Valetkey's own providers expect the broker to lend them: its outbound httpx client.

The core's ``ProviderContext`` leaves the HTTP client's type to the server and its providers
(the core imports no HTTP client); Valetkey's server lends the ``httpx.AsyncClient`` behind
the SSRF guard (``valetkey.netguard``), and these providers say so in their signatures.
"""

from __future__ import annotations

import httpx

from valetkey.core.providers import ProviderContext

__all__ = ["HttpContext"]

#: A provider context whose ``http`` is an ``httpx.AsyncClient``.
HttpContext = ProviderContext[httpx.AsyncClient]
