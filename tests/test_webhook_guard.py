"""The webhook SSRF guard and signatures, without a server."""

from __future__ import annotations

import asyncio
import time

import pytest
from yarl import URL

from membersense.webhooks.addresses import (
    BlockedAddress,
    GuardedResolver,
    check_literal,
    check_url,
    forbidden,
    resolve_checked,
)
from membersense.webhooks.signing import new_secret, signature, verify


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",
        "2001:db8::1",
    ],
)
def test_private_and_reserved_addresses_are_forbidden(address: str) -> None:
    assert forbidden(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2001:4860:4860::8888"])
def test_public_unicast_addresses_are_allowed(address: str) -> None:
    assert not forbidden(address)


def test_literals_are_checked_and_names_left_to_the_resolver() -> None:
    assert check_literal("8.8.8.8") is True
    assert check_literal("example.com") is False
    with pytest.raises(BlockedAddress):
        check_literal("::1")


def test_urls_are_http_or_https_without_credentials() -> None:
    assert check_url("https://hooks.example.com:8443/x?token=1").port == 8443
    for bad in (
        "file:///etc/passwd",
        "gopher://x/",
        "http://",
        "//x/y",
        "http://x:0x50/",
        "https://u@hooks.example.com/",
    ):
        with pytest.raises(ValueError):
            check_url(bad)


def test_the_resolver_refuses_a_name_of_a_loopback_address() -> None:
    async def scenario() -> None:
        with pytest.raises(BlockedAddress):
            await GuardedResolver().resolve("localhost", 80)
        with pytest.raises(BlockedAddress):
            await resolve_checked(URL("http://localhost:9/"))
        await resolve_checked(URL("http://8.8.8.8/"))  # a public literal: no DNS at all

    asyncio.run(scenario())


def test_a_signature_covers_timestamp_and_body() -> None:
    secret = new_secret()
    body = b'{"id":"e-1"}'
    now = int(time.time())
    header = signature(secret, now, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify(secret, str(now), header, body)
    assert not verify(secret, str(now), header, body + b" ")
    assert not verify(secret, str(now + 1), header, body)
    assert not verify(new_secret(), str(now), header, body)
    assert not verify(secret, "soon", header, body)
    old = now - 301
    assert not verify(secret, str(old), signature(secret, old, body), body)  # a replay


def test_the_readmes_receiver_snippet_accepts_our_signatures() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [snippet] = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.S)
        if "def verified" in block
    ]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)
    verified = namespace["verified"]
    secret, body, now = new_secret(), b'{"id":"e-1","type":"member.join"}', int(time.time())
    headers = {
        "X-MemberSense-Timestamp": str(now),
        "X-MemberSense-Signature": signature(secret, now, body),
    }
    assert verified(secret, headers, body)
    assert not verified(secret, headers, body + b"x")
    stale = {
        "X-MemberSense-Timestamp": str(now - 600),
        "X-MemberSense-Signature": signature(secret, now - 600, body),
    }
    assert not verified(secret, stale, body)
