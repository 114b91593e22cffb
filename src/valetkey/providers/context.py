"""What Valetkey's own providers expect the broker to lend them: its outbound httpx2 client.

The core's ``ProviderContext`` leaves the HTTP client's type to the server and its providers
(the core imports no HTTP client); Valetkey's server lends the ``httpx2.AsyncClient`` behind
the SSRF guard (``valetkey.netguard``), and these providers say so in their signatures.
"""

from __future__ import annotations

import httpx2

from valetkey.core.providers import ProviderContext

__all__ = ["HttpContext"]

#: A provider context whose ``http`` is an ``httpx2.AsyncClient``.
HttpContext = ProviderContext[httpx2.AsyncClient]
