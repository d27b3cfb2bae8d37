"""One authenticated call before the models load: is the token right, is the platform there?

Loading real models takes minutes on a CPU; a token with a typo, or no network, must be told
before that, in one line that names which of the two it is. Plain aiohttp, not the platform
libraries: those are heavy to import, and each adapter still checks again when it starts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

# Generous for a slow link, short next to a model load.
CHECK_TIMEOUT_S = 15.0


class PlatformUnreachable(Exception):
    """The platform's API could not be reached: the network, DNS, a proxy, a firewall."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the decoded JSON, or None


async def ask(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
              timeout_s: float = CHECK_TIMEOUT_S) -> Answer:
    """One request; PlatformUnreachable (with a reason free of the URL) when no answer came.

    The proxy variables are honoured, as the platform libraries honour them.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session, \
                session.request(method, url, headers=headers, allow_redirects=False) as reply:
            try:
                body = await reply.json(content_type=None)
            except ValueError:
                body = None
            return Answer(reply.status, body)
    except TimeoutError:
        raise PlatformUnreachable(f"no answer within {timeout_s:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        # Its message names host and port only; the URL (which may carry a token) stays out.
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        raise PlatformUnreachable(f"{exc.host}:{exc.port}: {reason}") from None
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        raise PlatformUnreachable(type(exc).__name__) from None
