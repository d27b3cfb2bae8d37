"""Behind a reverse proxy: only a trusted peer may say who the client is, and every
per-address rule then counts that client (the real nginx in front: test_nginx.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from bot.web.proxies import TrustedProxies, forwarded_elements
from tests.bot.web.conftest import ServeFactory, expect_error, png_bytes, upload_form
from tests.bot.web.test_connections import read_response

pytestmark = pytest.mark.timeout(120)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    # The client's own entries are to the left of what the proxies appended: not believed.
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "6.6.6.6, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
    ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
    ("127.0.0.1", "203.0.113.7:51000", "203.0.113.7"),
    ("127.0.0.1", "10.0.0.9, 10.0.0.2", "10.0.0.9"),  # began at a proxy
    ("127.0.0.1", "203.0.113.7, unknown", "127.0.0.1"),  # the proxy could not say: itself
    ("127.0.0.1", "", "127.0.0.1"),
    ("192.0.2.50", "203.0.113.7", "192.0.2.50"),  # an untrusted peer names nobody
    ("::ffff:127.0.0.1", "203.0.113.7", "203.0.113.7"),
])
def test_x_forwarded_for_is_read_from_the_right_past_trusted_proxies(
        peer: str, forwarded: str, client: str) -> None:
    given = headers(("X-Forwarded-For", forwarded)) if forwarded else headers()
    resolved = PROXIES.resolve(peer, given, False)
    assert resolved.address == client
    assert resolved.proxied == (peer != "192.0.2.50")


def test_repeated_headers_the_scheme_and_ipv6_blocks() -> None:
    given = headers(("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "2001:db8:1:2::5"),
                    ("X-Forwarded-Proto", "https"))
    client = PROXIES.resolve("127.0.0.1", given, False)
    assert (client.address, client.key, client.secure) == (
        "2001:db8:1:2::5", "2001:db8:1:2::/64", True)
    # One scheme per hop: the client's hop's.
    aligned = headers(("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
                      ("X-Forwarded-Proto", "https, http"))
    assert PROXIES.resolve("127.0.0.1", aligned, False).secure
    # From an untrusted peer the scheme is its connection's.
    assert not PROXIES.resolve("192.0.2.1", aligned, False).secure


def test_forwarded_is_read_only_when_chosen_and_parsed_as_rfc_7239() -> None:
    rfc = TrustedProxies(["127.0.0.1"], "forwarded")
    value = ('for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=203.0.113.43, '
             'For=127.0.0.1;proto=http')
    client = rfc.resolve("127.0.0.1", headers(("Forwarded", value),
                                              ("X-Forwarded-For", "9.9.9.9")), False)
    assert (client.address, client.secure) == ("2001:db8:cafe::17", True)
    # The header not chosen is ignored, whichever it is.
    assert PROXIES.resolve("127.0.0.1", headers(("Forwarded", "for=9.9.9.9")),
                           False).address == "127.0.0.1"
    for broken in ('for="unterminated', "for=9.9.9.9;;=x", "for=_hidden", "for=unknown"):
        resolved = rfc.resolve("127.0.0.1", headers(("Forwarded", broken)), False)
        assert resolved.address == "127.0.0.1", broken
    assert forwarded_elements('for=a;proto="h\\"t", ,for=b') == [
        {"for": "a", "proto": 'h"t'}, {"for": "b"}]


def test_only_addresses_and_networks_are_trusted() -> None:
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an IP address"):
        TrustedProxies(["proxy.example"])
    assert not TrustedProxies([])
    assert PROXIES.trusts("10.200.3.4") and PROXIES.trusts("fd00::1")
    assert not PROXIES.trusts("11.0.0.1") and not PROXIES.trusts("unknown")


async def test_behind_a_trusted_proxy_every_rule_counts_the_client_it_names(
        serve: ServeFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    served = await serve(web={"trusted_proxies": ["127.0.0.1"], "new_browsers_per_hour": 1,
                              "per_address_per_hour": 1})
    base = f"http://127.0.0.1:{served.port}"
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async def get_page(client: str, **extra: str) -> aiohttp.ClientResponse:
            async with session.get(f"{base}/", headers={"X-Forwarded-For": client, **extra},
                                   allow_redirects=False) as resp:
                await resp.read()
                session.cookie_jar.clear()
                return resp

        # Identity issuance: one new browser per address per hour, per forwarded client.
        first = await get_page("203.0.113.7", **{"X-Forwarded-Proto": "https"})
        assert "sonify_uid" in first.cookies and first.cookies["sonify_uid"]["secure"]
        again = await get_page("203.0.113.7")
        assert "sonify_uid" not in again.cookies
        other = await get_page("203.0.113.8")
        assert "sonify_uid" in other.cookies and not other.cookies["sonify_uid"]["secure"]
        # Through the proxy the Host is the public name; the loopback-only check is the
        # proxy's (server_name), not this server's.
        named = await get_page("203.0.113.9", Host="sonify.example.org")
        assert named.status == 200
        # The hourly limit per address, and its refusal row under the client's address.
        for client, status in (("203.0.113.7", 202), ("203.0.113.7", 429),
                               ("203.0.113.8", 202)):
            async with session.post(f"{base}/api/jobs", data=upload_form(png_bytes()),
                                    headers={"X-Forwarded-For": client}) as resp:
                assert resp.status == status, await resp.text()
                if status == 429:
                    await expect_error(resp, 429, "address_hourly")
    rows = await served.services.request_log.rows_since(0)
    assert sorted((r.user_id, r.status) for r in rows if r.status == "rejected") == [
        ("ip:203.0.113.7", "rejected")]
    assert {r.user_id for r in rows} == {"ip:203.0.113.7", "ip:203.0.113.8"}
    access = [r.getMessage() for r in caplog.records if r.name == "sonify.web.access"]
    assert any(line.startswith("web GET / 200") and line.endswith("from 203.0.113.7")
               for line in access)
    assert any(line.startswith("web POST /api/jobs 429") and line.endswith("from 203.0.113.7")
               for line in access)


async def test_without_trust_the_headers_are_ignored(serve: ServeFactory) -> None:
    served = await serve(web={"new_browsers_per_hour": 1})
    import aiohttp

    async with aiohttp.ClientSession() as session:
        got = []
        for client in ("203.0.113.7", "203.0.113.8"):
            async with session.get(f"http://127.0.0.1:{served.port}/",
                                   headers={"X-Forwarded-For": client,
                                            "X-Forwarded-Proto": "https"}) as resp:
                got.append(resp.cookies.get("sonify_uid"))
            session.cookie_jar.clear()
        assert got[0] is not None and not got[0]["secure"]
        assert got[1] is None  # the same address (127.0.0.1) asked twice
        async with session.get(f"http://127.0.0.1:{served.port}/",
                               headers={"Host": "sonify.example.org"}) as resp:
            assert resp.status == 403  # a loopback page answers loopback names only


async def test_a_proxys_connections_are_not_capped_its_clients_open_requests_are(
        serve: ServeFactory) -> None:
    """Three connections from the proxy pass a cap of two; the third open request of one
    client does not, while another client's does."""
    served = await serve(web={"trusted_proxies": ["127.0.0.1"],
                              "max_connections_per_address": 2})

    def held(client: str) -> bytes:  # a request whose body never comes: it stays open
        return (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {client}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()

    opened = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(held("203.0.113.7"))
        await writer.drain()
        opened.append((reader, writer))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(held("203.0.113.7"))
        await writer.drain()
        assert await asyncio.wait_for(read_response(reader), 10) == 429
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"X-Forwarded-For: 203.0.113.8\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(read_response(reader), 10) == 200
        writer.close()
    finally:
        for _, writer in opened:
            writer.close()
