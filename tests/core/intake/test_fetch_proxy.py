"""Downloads ignore proxy environment variables: a proxy would resolve names past our checks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.config import ImagesConfig
from core.intake.decode import DecodedImage
from core.intake.fetch import ImageFetcher
from tests.core.intake.fetch_servers import (
    DNS_TABLE,
    PNG,
    PretendPublic,
    RawServer,
    WebServer,
    serve_png,
)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")


async def test_proxy_environment_variables_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # The "proxy" answers every connection with a picture, so a fetch through it would
    # succeed too: only its connection count tells the two apart.
    proxy = await RawServer(serve_png).start()
    site = await WebServer().start()
    fetcher = ImageFetcher(replace(ImagesConfig(), connect_timeout_s=2.0, download_timeout_s=5.0),
                           resolver=PretendPublic(DNS_TABLE, {"public.test"}))
    try:
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy"):  # the test session exempts loopback: not here
            monkeypatch.delenv(name, raising=False)
        assert await fetcher.fetch(f"http://public.test:{site.port}/png") == PNG
        picture = await fetcher.fetch_image(f"http://public.test:{site.port}/png")
    finally:
        await fetcher.close()
        await site.close()
        await proxy.close()
    assert isinstance(picture, DecodedImage)
    assert proxy.connections == 0
    assert site.paths == ["/png", "/png"]  # both fetches went straight to the site
