"""Framing requests as their bytes arrive, and the deadlines that come with it."""

from __future__ import annotations

import pytest

from membersense.request_reader import ReadLimits, ReadState, RequestReader

LIMITS = ReadLimits(
    header_timeout=5.0,
    body_min_rate=100.0,
    keepalive=2.0,
    max_body=1000,
    max_request_line=100,
    max_head=2000,
    max_chunk_line=50,
)
GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def post(body: bytes, *headers: bytes) -> bytes:
    return (
        b"POST /x HTTP/1.1\r\nHost: h\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    )


def fed(data: bytes, *, step: int = 0, now: float = 0.0) -> RequestReader:
    """A reader given *data* at once, or *step* bytes at a time."""
    reader = RequestReader(LIMITS, now)
    pieces = [data] if not step else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        reader.feed(piece, now)
    return reader


@pytest.mark.parametrize("step", [0, 1, 3])
def test_a_request_without_body_is_ready_at_the_end_of_its_head(step: int) -> None:
    reader = fed(GET + b"GET /next", step=step)
    assert reader.state is ReadState.READY and not reader.must_close
    assert reader.take() == (GET, b"GET /next")


@pytest.mark.parametrize("step", [0, 1, 7])
def test_a_content_length_body(step: int) -> None:
    request = post(b"0123456789", b"Content-Length: 10")
    assert fed(request[:-1], step=step).state is ReadState.READING
    reader = fed(request + b"extra", step=step)
    assert reader.take() == (request, b"extra")


@pytest.mark.parametrize("step", [0, 1, 5])
def test_a_chunked_body_with_extensions_and_trailers(step: int) -> None:
    body = b"4;name=value\r\nWiki\r\n5\r\npedia\r\nA \r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"
    request = post(body, b"Transfer-Encoding: chunked")
    assert fed(request[:-1], step=step).state is ReadState.READING
    reader = fed(request + GET, step=step)
    assert reader.state is ReadState.READY and not reader.must_close
    assert reader.take() == (request, GET)


def test_an_empty_chunked_body() -> None:
    request = post(b"0\r\n\r\n", b"transfer-encoding: gzip, chunked")
    assert fed(request).take() == (request, b"")


def test_one_empty_line_before_the_request_line_is_allowed() -> None:
    assert fed(b"\r\n" + GET).take() == (b"\r\n" + GET, b"")


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(b"{}", b"Content-Length: 2", b"Transfer-Encoding: chunked"),  # CL and TE
        post(b"{}", b"Content-Length: 2", b"Content-Length: 2"),
        post(b"{}", b"Content-Length: +2"),
        post(b"", b"Transfer-Encoding: gzip"),  # not ending in chunked
        post(b"", b"Transfer-Encoding: chunked, chunked"),
        post(b"zz\r\nabc\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),  # not a chunk size
        post(b"3\r\nabcXY", b"Transfer-Encoding: chunked"),  # no CRLF after the data
        post(b"1" * 60, b"Transfer-Encoding: chunked"),  # a chunk-size line that never ends
        post(b"", b"Content-Length: 1001"),  # over the limit: refused from the header
        post(b"3e9\r\n" + b"x" * 1001, b"Transfer-Encoding: chunked"),  # over the limit, chunked
        post(b"1\r\nx\r\n" * 700, b"Transfer-Encoding: chunked"),  # framing costs too much
        b"GET /x HTTP/1.1\nHost: h\n\n",  # bare LF
        b"GET /" + b"x" * 200,  # a request line over the limit
    ],
    ids=[
        "CL+TE",
        "two CL",
        "signed CL",
        "TE gzip",
        "chunked twice",
        "bad size",
        "bad CRLF",
        "endless size line",
        "CL over limit",
        "chunked over limit",
        "tiny chunks",
        "bare LF",
        "long line",
    ],
)
def test_what_cannot_be_framed_goes_to_gunicorn_as_it_stands(request_bytes: bytes) -> None:
    # gunicorn's parser (or the app reading the body) then answers with the right error,
    # and the connection closes.
    reader = fed(request_bytes)
    assert reader.state is ReadState.READY and reader.must_close
    assert reader.take() == (request_bytes, b"")


def test_a_head_that_grows_past_the_limit() -> None:
    reader = fed(b"GET /x HTTP/1.1\r\n" + b"X-Filler: aaaaaaaaaa\r\n" * 100)
    assert reader.state is ReadState.HEAD_TOO_LARGE


def test_a_bare_lf_in_the_body_is_just_data() -> None:
    request = post(b"a\nb", b"Content-Length: 3")
    reader = fed(request)
    assert reader.take() == (request, b"") and not reader.must_close


def test_a_new_connection_has_the_header_timeout_to_send_its_head() -> None:
    reader = RequestReader(LIMITS, 100.0)
    assert not reader.started and reader.deadline == 105.0
    reader.feed(b"GET / HT", 103.0)
    assert reader.started and reader.deadline == 105.0  # a total, not per read


def test_a_kept_alive_connection_idles_for_keepalive_then_gets_the_header_timeout() -> None:
    reader = RequestReader(LIMITS, 100.0, kept_alive=True)
    assert reader.deadline == 102.0
    reader.feed(b"G", 101.5)
    assert reader.deadline == 106.5


def test_pipelined_bytes_start_the_next_request_at_once() -> None:
    reader = RequestReader(LIMITS, 100.0, kept_alive=True, pending=GET)
    assert reader.take() == (GET, b"")
    partial = RequestReader(LIMITS, 100.0, kept_alive=True, pending=b"GET /")
    assert partial.started and partial.deadline == 105.0


def test_the_body_gets_the_header_timeout_plus_a_second_per_min_rate_bytes() -> None:
    reader = RequestReader(LIMITS, 100.0)
    reader.feed(post(b"", b"Content-Length: 500"), 101.0)
    assert reader.deadline == 106.0
    reader.feed(b"x" * 200, 102.0)  # 200 bytes at 100 B/s: two more seconds
    assert reader.deadline == 108.0
    reader.feed(b"x" * 300, 103.0)
    assert reader.state is ReadState.READY


def test_expect_100_continue_is_noted_for_http_1_1_bodies_only() -> None:
    assert fed(post(b"", b"Content-Length: 5", b"Expect: 100-continue")).expects_continue
    assert not fed(post(b"", b"Expect: 100-continue")).expects_continue  # no body
    http10 = b"POST /x HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    assert not fed(http10).expects_continue


def test_taking_before_ready_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        fed(b"GET /").take()
