"""Pure URL helpers: the address policy, browser-style numeric hosts, links in chat text."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from core.intake.links import first_url, is_blocked_address, parse_ipv4_host


@pytest.mark.parametrize(("address", "blocked"), [
    ("8.8.8.8", False), ("1.1.1.1", False), ("2001:4860:4860::8888", False),
    ("::ffff:8.8.8.8", False), ("64:ff9b::808:808", False), ("2002:808:808::1", False),
    ("127.0.0.1", True), ("100.127.255.254", True), ("198.18.0.1", True),
    ("192.0.2.1", True), ("::", True), ("::ffff:10.1.2.3", True), ("fec0::1", True),
    ("2001:db8::1", True), ("64:ff9b:1::a00:1", True), ("2001::1", True),
])
def test_address_policy(address: str, blocked: bool) -> None:
    assert is_blocked_address(ip_address(address)) is blocked


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f.0.0.0x1", "127.0.0.1"), ("017700000001", "127.0.0.1"),
    ("10.1", "10.0.0.1"), ("0", "0.0.0.0"), ("8.8.8.8.", "8.8.8.8"),
    ("example.com", None), ("1e3", None), ("127.0.0.1.nip.io", None),
])
def test_numeric_hosts_are_read_like_browsers_do(host: str, address: str | None) -> None:
    parsed = parse_ipv4_host(host)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize(("text", "url"), [
    ("look https://example.com/cat.png!", "https://example.com/cat.png"),
    ("(see https://example.com/a_(b).jpg)", "https://example.com/a_(b).jpg"),
    ("[pic](https://example.com/p.png), nice", "https://example.com/p.png"),
    ("<https://example.com/x.webp> and http://b.example/y.gif", "https://example.com/x.webp"),
    ("||https://example.com/s.png||", "https://example.com/s.png"),
    ("HTTP://Example.com/Q?a=1&b=2.", "HTTP://Example.com/Q?a=1&b=2"),
    ("ftp://example.com/a.png and www.example.com/b.png", None),
    ("http:// nothing here", None), ("", None),
])
def test_first_url_finds_the_first_http_link(text: str, url: str | None) -> None:
    assert first_url(text) == url
