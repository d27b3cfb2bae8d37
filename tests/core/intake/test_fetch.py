"""Fetching image links: SSRF refusals (with proof of no connection), limits, timeouts."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest

from core.config import ImagesConfig
from core.errors import ImageRejected
from core.i18n import describe_error
from core.intake.decode import DecodedImage
from core.intake.fetch import ImageFetcher, SafeResolver
from tests.core.intake.fetch_servers import (
    DNS_TABLE,
    PNG,
    FakeDNS,
    HangingDNS,
    PretendPublic,
    RawServer,
    WebServer,
    head,
    recorded_connects,
    serve_png,
    wait_for_hangup,
)

MakeFetcher = Callable[..., ImageFetcher]


@pytest.fixture
async def make_fetcher() -> AsyncIterator[MakeFetcher]:
    made: list[ImageFetcher] = []

    def make(*, allow_private: bool = False, resolver: Any = None, **changes: Any) -> ImageFetcher:
        settings = {"connect_timeout_s": 1.0, "download_timeout_s": 3.0, **changes}
        cfg = replace(ImagesConfig(), allow_private_networks=allow_private, **settings)
        if resolver is None:
            resolver = SafeResolver(allow_private=allow_private, base=FakeDNS(DNS_TABLE))
        made.append(ImageFetcher(cfg, resolver=resolver))
        return made[-1]

    yield make
    for fetcher in made:
        await fetcher.close()


@pytest.fixture
async def counter() -> AsyncIterator[RawServer]:
    """Serves a PNG on 127.0.0.1 and ::1 (one port) and counts every connection."""
    server = await RawServer(serve_png).start(ipv6=True)
    yield server
    await server.close()


@pytest.fixture
async def site() -> AsyncIterator[WebServer]:
    server = await WebServer().start()
    yield server
    await server.close()


async def rejected(fetcher: ImageFetcher, url: str) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        await fetcher.fetch(url)
    return info.value


# Each form reaches the counting server when private networks are allowed (see the control).
LOOPBACK_FORMS = [
    "http://127.0.0.1:{port}/a.png", "https://127.0.0.1:{port}/a.png",
    "http://127.1:{port}/a.png", "http://2130706433:{port}/a.png",
    "http://0177.0.0.1:{port}/a.png", "http://0x7f.1:{port}/a.png",
    "http://0x7f000001:{port}/a.png", "http://127.0.0.1.:{port}/a.png",
    "http://localhost:{port}/a.png", "http://LocalHost.:{port}/a.png",
    "http://[::1]:{port}/a.png", "http://[::ffff:127.0.0.1]:{port}/a.png",
    "http://[::ffff:7f00:1]:{port}/a.png", "http://0.0.0.0:{port}/a.png",
    "http://0:{port}/a.png", "http://[::]:{port}/a.png",
    "http://internal.test:{port}/a.png", "http://internal6.test:{port}/a.png",
    "http://mapped.test:{port}/a.png",
]
# Addresses no loopback server can stand in for; the proof is that nothing connects at all.
OTHER_BLOCKED = [
    "http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/", "http://2852039166/", "http://10.0.0.1/",
    "http://172.16.5.4/", "http://192.168.1.1/", "http://100.64.0.1/", "http://224.0.0.1/",
    "http://240.0.0.1/", "http://255.255.255.255/", "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/", "http://[fc00::1]/", "http://[ff02::1]/",
    "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "http://[::127.0.0.1]/",
    "http://foo.localhost/", "http://metadata.test/", "http://lan.test/", "http://mixed.test/",
]


@pytest.mark.parametrize("form", LOOPBACK_FORMS)
async def test_loopback_forms_are_refused_without_connecting(
        form: str, counter: RawServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher()
    with recorded_connects() as connects:
        error = await rejected(fetcher, form.format(port=counter.port))
    assert error.code == "blocked_address"
    assert connects == [] and counter.connections == 0


@pytest.mark.parametrize("form", LOOPBACK_FORMS)
async def test_control_the_same_forms_reach_the_server_when_allowed(
        form: str, counter: RawServer, make_fetcher: MakeFetcher) -> None:
    if ("[" in form or "6.test" in form or "mapped" in form) and not counter.on_ipv6:
        pytest.skip("no IPv6 loopback here")
    fetcher = make_fetcher(allow_private=True)
    assert await fetcher.fetch(form.format(port=counter.port).replace("https:", "http:")) == PNG
    assert counter.connections == 1


@pytest.mark.parametrize("url", OTHER_BLOCKED)
async def test_private_and_special_addresses_are_refused_without_connecting(
        url: str, make_fetcher: MakeFetcher) -> None:
    with recorded_connects() as connects:
        error = await rejected(make_fetcher(), url)
    assert error.code == "blocked_address" and connects == []
    assert "private or local network" in describe_error(error, "en")
    # The refusal tells someone running Sonify at home which setting lets such links in.
    assert "[images] allow_private_networks = true" in describe_error(error, "en")
    assert "[images] allow_private_networks = true" in describe_error(error, "es")


async def test_default_resolver_uses_the_system_and_allows_loopback_only_when_told(
        counter: RawServer) -> None:
    strict = ImageFetcher(ImagesConfig())  # production defaults: real resolver, no private nets
    relaxed = ImageFetcher(replace(ImagesConfig(), allow_private_networks=True))
    try:
        assert (await rejected(strict, f"http://localhost:{counter.port}/")).code == \
            "blocked_address"
        assert counter.connections == 0
        assert await relaxed.fetch(f"http://localhost:{counter.port}/") == PNG
        assert counter.connections == 1
    finally:
        await strict.close()
        await relaxed.close()


REDIRECT_TARGETS = [
    "http://127.0.0.1:{port}/a.png", "http://internal.test:{port}/a.png",
    "http://[::1]:{port}/a.png", "http://2130706433:{port}/a.png",
    "http://localhost:{port}/a.png", "http://[::ffff:127.0.0.1]:{port}/a.png",
    "http://169.254.169.254/latest/meta-data/", "http://metadata.test/",
]


@pytest.mark.parametrize("target", REDIRECT_TARGETS)
@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_from_a_public_host_to_a_blocked_one_is_refused(
        target: str, status: int, site: WebServer, counter: RawServer,
        make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(resolver=PretendPublic(DNS_TABLE, {"public.test"}))
    hop = quote(target.format(port=counter.port), safe="")
    with recorded_connects() as connects:
        error = await rejected(fetcher, f"http://public.test:{site.port}/to?status={status}"
                                        f"&target={hop}")
    assert error.code == "blocked_address"
    assert site.paths == ["/to"] and counter.connections == 0
    assert connects and all(address[1] == site.port for address in connects)


async def test_public_test_host_works_and_redirects_are_checked_each_hop(
        site: WebServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(resolver=PretendPublic(DNS_TABLE, {"public.test"}), max_redirects=3)
    base = f"http://public.test:{site.port}"
    assert await fetcher.fetch(f"{base}/png") == PNG
    assert await fetcher.fetch(f"{base}/to?target=/png") == PNG  # relative Location
    assert await fetcher.fetch(f"{base}/chain/3") == PNG
    assert (await rejected(fetcher, f"{base}/chain/4")).code == "fetch_failed"
    assert (await rejected(fetcher, f"{base}/no-location")).code == "fetch_failed"
    file_hop = quote("file:///etc/passwd", safe="")
    assert (await rejected(fetcher, f"{base}/to?target={file_hop}")).code == "bad_url"
    strict = make_fetcher(resolver=PretendPublic(DNS_TABLE, {"public.test"}), max_redirects=0)
    assert (await rejected(strict, f"{base}/chain/1")).code == "fetch_failed"


@pytest.mark.parametrize("url", [
    "ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/",
    "javascript:alert(1)", "data:image/png;base64,iVBORw0KGgo=", "http://", "http:///a.png",
    "http://%31%32%37.0.0.1/", "http://1.2.3.4.5/", "http://256.0.0.1/", "http://08.0.0.1/",
    "http://0x7g.0.0.1/", "not a link", "http://exa mple.com/", "http://a..b/",
    "http://example.com/" + "a" * 5000,
])
async def test_malformed_or_non_http_links_are_bad_urls(
        url: str, make_fetcher: MakeFetcher) -> None:
    with recorded_connects() as connects:
        assert (await rejected(make_fetcher(allow_private=True), url)).code == "bad_url"
    assert connects == []


async def test_images_by_bytes_and_non_images_by_name(
        site: WebServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(allow_private=True)
    base = f"http://127.0.0.1:{site.port}"
    decoded = await fetcher.fetch_image(f"{base}/png")  # served as text/plain
    assert isinstance(decoded, DecodedImage) and decoded.image.mode == "RGB"
    for path, name in (("html", "HTML"), ("svg", "SVG"), ("pdf", "PDF")):
        with pytest.raises(ImageRejected) as info:
            await fetcher.fetch_image(f"{base}/{path}")
        assert (info.value.code, info.value.params["format"]) == ("unsupported_format", name)
        assert describe_error(info.value, "en").startswith(f"{name} files aren't supported")
    assert (await rejected(fetcher, f"{base}/empty")).code == "empty"
    missing = await rejected(fetcher, f"{base}/status/404")
    assert (missing.code, missing.params["status"]) == ("fetch_status", 404)
    assert "HTTP 404" in describe_error(missing, "en")


async def test_requests_carry_an_honest_browser_like_user_agent(
        site: WebServer, make_fetcher: MakeFetcher) -> None:
    await make_fetcher(allow_private=True).fetch(f"http://127.0.0.1:{site.port}/png")
    headers = site.headers[-1]
    assert headers["User-Agent"] == ("Mozilla/5.0 (compatible; Sonify/0.1; "
                                     "+https://github.com/sonify-bot/sonify)")
    assert headers["Accept-Encoding"] == "identity" and "Cookie" not in headers


LIMIT = 100_000


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   server: RawServer, headers: bytes) -> None:
    await server.send(writer, headers)
    chunked = b"chunked" in headers
    block = b"\x00" * 65536
    while True:
        await server.send(writer, b"10000\r\n" + block + b"\r\n" if chunked else block)


@pytest.mark.parametrize("headers", [
    head(Transfer_Encoding="chunked"),  # no Content-Length at all
    head(Connection="close"),           # body delimited by closing the connection
], ids=["chunked", "close-delimited"])
async def test_endless_bodies_stop_at_the_limit(
        headers: bytes, make_fetcher: MakeFetcher) -> None:
    async def script(reader: Any, writer: Any, server: RawServer) -> None:
        await _endless(reader, writer, server, headers)

    server = await RawServer(script).start()
    try:
        started = time.monotonic()
        error = await rejected(make_fetcher(allow_private=True, max_bytes=LIMIT),
                               f"http://127.0.0.1:{server.port}/")
        assert (error.code, error.params["max_bytes"]) == ("too_large", LIMIT)
        await asyncio.wait_for(server.disconnected.wait(), 2)  # we hung up, not drained
        assert time.monotonic() - started < 2
        assert server.bytes_sent < 64 * 2**20
    finally:
        await server.close()


async def test_an_honest_huge_content_length_is_refused_before_the_body(
        make_fetcher: MakeFetcher) -> None:
    async def script(reader: Any, writer: Any, server: RawServer) -> None:
        await server.send(writer, head(Content_Length=10**12))
        server.bytes_sent = 0  # count body bytes only: there will be none
        await wait_for_hangup(reader)

    server = await RawServer(script).start()
    try:
        error = await rejected(make_fetcher(allow_private=True, max_bytes=LIMIT),
                               f"http://127.0.0.1:{server.port}/")
        assert error.code == "too_large" and "0.1 MB" in describe_error(error, "en")
        await asyncio.wait_for(server.disconnected.wait(), 2)
        assert server.bytes_sent == 0
    finally:
        await server.close()


@pytest.mark.parametrize(("declared", "sent", "outcome"), [
    (None, LIMIT, "ok"), (None, LIMIT + 1, "too_large"),
    (LIMIT, LIMIT, "ok"), (LIMIT + 1, LIMIT + 1, "too_large"),
    (1000, 5 * 2**20, 1000),  # a Content-Length that understates: only 1000 bytes are read
    (1000, 10, "fetch_failed"),  # a Content-Length that overstates, then the server hangs up
])
async def test_size_limit_boundaries_and_lying_content_lengths(
        declared: int | None, sent: int, outcome: str | int, make_fetcher: MakeFetcher) -> None:
    async def script(reader: Any, writer: Any, server: RawServer) -> None:
        headers = {"Connection": "close"} if declared is None else {"Content_Length": declared}
        body = (PNG[:64] + b"\x00" * sent)[:sent]  # starts like a PNG, then garbage
        first = len(body) if declared is None else min(declared, len(body))
        await server.send(writer, head(**headers) + body[:first])
        if first < len(body):
            # The surplus comes after the declared body: the client must not read it.
            await asyncio.sleep(0.2)
            await server.send(writer, body[first:])

    server = await RawServer(script).start()
    fetcher = make_fetcher(allow_private=True, max_bytes=LIMIT)
    url = f"http://127.0.0.1:{server.port}/"
    try:
        if outcome == "ok":
            assert len(await fetcher.fetch(url)) == sent
        elif isinstance(outcome, int):
            assert len(await fetcher.fetch(url)) == outcome
            with pytest.raises(ImageRejected) as info:
                await fetcher.fetch_image(url)
            assert info.value.code == "corrupt"
        else:
            assert (await rejected(fetcher, url)).code == outcome
    finally:
        await server.close()


async def _trickle(reader: Any, writer: Any, server: RawServer) -> None:
    await server.send(writer, head(Content_Length=1000))
    while True:
        await server.send(writer, b"\x00")
        await asyncio.sleep(0.05)


async def _silent(reader: Any, writer: Any, server: RawServer) -> None:
    await wait_for_hangup(reader)


async def _status_line_only(reader: Any, writer: Any, server: RawServer) -> None:
    await server.send(writer, b"HTTP/1.1 200 OK\r\n")
    await wait_for_hangup(reader)


@pytest.mark.parametrize("script", [_trickle, _silent, _status_line_only])
async def test_slow_servers_are_cut_off_by_the_download_timeout(
        script: Any, make_fetcher: MakeFetcher) -> None:
    server = await RawServer(script).start()
    try:
        started = time.monotonic()
        error = await rejected(make_fetcher(allow_private=True, download_timeout_s=0.3),
                               f"http://127.0.0.1:{server.port}/")
        elapsed = time.monotonic() - started
        assert error.code == "fetch_timeout" and 0.25 < elapsed < 1.5
        await asyncio.wait_for(server.disconnected.wait(), 2)
    finally:
        await server.close()


async def test_a_resolver_that_never_answers_hits_the_connect_timeout(
        make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(resolver=SafeResolver(base=HangingDNS({})), connect_timeout_s=0.3,
                           download_timeout_s=5.0)
    started = time.monotonic()
    assert (await rejected(fetcher, "http://slow.test/a.png")).code == "fetch_timeout"
    assert time.monotonic() - started < 1.5


async def test_unreachable_hosts_are_told_apart_from_error_answers(
        make_fetcher: MakeFetcher) -> None:
    server = await RawServer(serve_png).start()
    port = server.port
    await server.close()  # nothing listens there any more
    fetcher = make_fetcher(allow_private=True)
    assert (await rejected(fetcher, f"http://127.0.0.1:{port}/")).code == "fetch_unreachable"
    assert (await rejected(fetcher, "http://no-such-host.test/")).code == "fetch_unreachable"


async def test_errors_never_reveal_the_link(site: WebServer, counter: RawServer,
                                            make_fetcher: MakeFetcher) -> None:
    secret = "SECRETTOKEN42"
    fetcher = make_fetcher(allow_private=True, download_timeout_s=0.3)
    strict = make_fetcher()
    silent = await RawServer(_silent).start()
    links = [
        (fetcher, f"http://127.0.0.1:{site.port}/status/404?token={secret}"),
        (fetcher, f"http://127.0.0.1:{site.port}/{secret}/html"),
        (fetcher, f"http://127.0.0.1:{silent.port}/x?key={secret}"),
        (fetcher, f"http://no-such-host.test/{secret}"),
        (fetcher, f"ftp://user:{secret}@example.com/"),
        (strict, f"http://bot:{secret}@127.0.0.1:{counter.port}/a.png"),
    ]
    try:
        for who, link in links:
            with pytest.raises(ImageRejected) as info:
                await who.fetch_image(link)
            error = info.value
            shown = [str(error), repr(error.params), describe_error(error, "en"),
                     describe_error(error, "es"), "".join(traceback.format_exception(error))]
            assert not any(secret in text for text in shown), error.code
    finally:
        await silent.close()


async def test_the_vetted_answer_is_the_one_connected_to(
        counter: RawServer, make_fetcher: MakeFetcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that answers a good address once and a metadata address after."""
    import core.intake.fetch

    answers = [["127.0.0.1"], ["169.254.169.254"]]

    class RebindingDNS(FakeDNS):
        calls = 0

        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
            self.table = {host: answers[min(RebindingDNS.calls, 1)]}
            RebindingDNS.calls += 1
            return await super().resolve(host, port, family)

    # Loopback stands in for the good public address; everything else keeps the real policy.
    real_policy = core.intake.fetch.is_blocked_address
    monkeypatch.setattr(core.intake.fetch, "is_blocked_address",
                        lambda ip: str(ip) != "127.0.0.1" and real_policy(ip))
    fetcher = make_fetcher(resolver=SafeResolver(base=RebindingDNS({})))
    with recorded_connects() as connects:
        assert await fetcher.fetch(f"http://rebind.test:{counter.port}/a.png") == PNG
    assert RebindingDNS.calls == 1  # one lookup, vetted, used for the connection
    assert [address[:2] for address in connects] == [("127.0.0.1", counter.port)]
    blocked = make_fetcher(resolver=SafeResolver(base=RebindingDNS({})))
    assert (await rejected(blocked, f"http://rebind.test:{counter.port}/a.png")).code == \
        "blocked_address"
    assert counter.connections == 1
