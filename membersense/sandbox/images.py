"""Pictures for the sandbox's CDN: identicons, default avatars and attachment stand-ins.

Every picture is derived from a seed string (an avatar or icon hash, an attachment id),
so the same URL always shows the same picture, and is encoded here as PNG (``zlib`` and
``struct``) or GIF (a small LZW encoder, for ``a_`` animated hashes) with a palette of a
few colours. Pictures are built row by row from repeated byte strings, which keeps even a
1920x1080 attachment cheap to make.
"""

from __future__ import annotations

import colorsys
import hashlib
import struct
import zlib
from collections.abc import Sequence

__all__ = [
    "Picture",
    "attachment_picture",
    "default_avatar",
    "encode_gif",
    "encode_png",
    "identicon",
]

RGB = tuple[int, int, int]

#: Discord's six default avatar colours (blurple, grey, green, yellow, red, pink).
DEFAULT_AVATAR_COLOURS: tuple[RGB, ...] = (
    (0x58, 0x65, 0xF2),
    (0x75, 0x7E, 0x8A),
    (0x3B, 0xA5, 0x5C),
    (0xFA, 0xA6, 0x1A),
    (0xED, 0x42, 0x45),
    (0xEB, 0x45, 0x9F),
)
_WHITE: RGB = (0xFF, 0xFF, 0xFF)
_BACKGROUND: RGB = (0xF2, 0xF3, 0xF5)
#: A pale "Clyde"-like face for default avatars: 1 = white, on a 5x5 grid.
_DEFAULT_FACE = (
    (0, 1, 1, 1, 0),
    (1, 0, 1, 0, 1),
    (1, 1, 1, 1, 1),
    (1, 0, 0, 0, 1),
    (0, 1, 1, 1, 0),
)


class Picture:
    """A palette image: ``rows`` of colour indices (one byte per pixel) into ``palette``."""

    __slots__ = ("height", "palette", "rows", "width")

    def __init__(self, width: int, height: int, palette: Sequence[RGB], rows: list[bytes]) -> None:
        if len(rows) != height or any(len(row) != width for row in rows):
            raise ValueError("rows do not match the picture's size")
        self.width, self.height, self.palette, self.rows = width, height, list(palette), rows


def _digest(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()


def _colour(digest: bytes, offset: int, lightness: float, saturation: float) -> RGB:
    hue = int.from_bytes(digest[offset : offset + 2], "big") / 65535
    r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
    return round(r * 255), round(g * 255), round(b * 255)


def _grid_picture(grid: Sequence[Sequence[int]], size: int, palette: Sequence[RGB]) -> Picture:
    """*grid* (square, of palette indices) drawn with a margin on a *size* x *size* picture."""
    cells = len(grid)
    cell = max(1, size // (cells + 1))
    margin_left = (size - cell * cells) // 2
    margin_right = size - cell * cells - margin_left
    blank = bytes(size)
    rows: list[bytes] = []
    top = (size - cell * cells) // 2
    rows.extend([blank] * top)
    for line in grid:
        row = bytes(margin_left) + b"".join(bytes([v]) * cell for v in line) + bytes(margin_right)
        rows.extend([row] * cell)
    rows.extend([blank] * (size - len(rows)))
    return Picture(size, size, palette, rows)


def identicon(seed: str, size: int) -> Picture:
    """A GitHub-style identicon: a left-right symmetric 5x5 pattern in one colour of *seed*."""
    digest = _digest(seed)
    colour = _colour(digest, 0, 0.55, 0.6)
    bits = int.from_bytes(digest[2:6], "big")
    grid = []
    for y in range(5):
        half = [(bits >> (y * 3 + x)) & 1 for x in range(3)]
        grid.append(half + half[1::-1])
    if not any(any(line) for line in grid):  # never a blank picture
        grid[2][2] = 1
    return _grid_picture(grid, size, [_BACKGROUND, colour])


def default_avatar(index: int, size: int) -> Picture:
    """Discord's default avatar *index* (0-5): a white face on that avatar's colour."""
    colour = DEFAULT_AVATAR_COLOURS[index % len(DEFAULT_AVATAR_COLOURS)]
    return _grid_picture(_DEFAULT_FACE, size, [colour, _WHITE])


def attachment_picture(seed: str, width: int, height: int) -> Picture:
    """A *width* x *height* stand-in for an image attachment: bands of colour from *seed*."""
    digest = _digest(seed)
    palette = [_colour(digest, 2 * i, 0.35 + 0.1 * i, 0.55) for i in range(4)]
    columns = 8
    column_width = -(-width // columns)
    bands = 6
    band_height = -(-height // bands)
    rows: list[bytes] = []
    for band in range(bands):
        row = b"".join(
            bytes([(digest[(band * columns + c) % len(digest)] + band) % len(palette)])
            * column_width
            for c in range(columns)
        )[:width]
        rows.extend([row] * min(band_height, height - len(rows)))
    return Picture(width, height, palette, rows)


# -- PNG ---------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(picture: Picture) -> bytes:
    """*picture* as an 8-bit palette PNG."""
    header = struct.pack(">IIBBBBB", picture.width, picture.height, 8, 3, 0, 0, 0)
    palette = b"".join(bytes(colour) for colour in picture.palette)
    # Filter type 0 (none) before every row; repeated rows compress to almost nothing.
    raw = b"".join(b"\x00" + row for row in picture.rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"PLTE", palette)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


# -- GIF ---------------------------------------------------------------------


def _lzw(pixels: bytes, min_code_size: int) -> bytes:
    """GIF's variable-width LZW of *pixels*, packed into bytes least significant bit first."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out = bytearray()
    bit_buffer = bit_count = 0

    def emit(code: int, width: int) -> None:
        nonlocal bit_buffer, bit_count
        bit_buffer |= code << bit_count
        bit_count += width
        while bit_count >= 8:
            out.append(bit_buffer & 0xFF)
            bit_buffer >>= 8
            bit_count -= 8

    def fresh() -> dict[bytes, int]:
        return {bytes([i]): i for i in range(clear)}

    table, next_code, width = fresh(), end + 1, min_code_size + 1
    emit(clear, width)
    current = b""
    for value in pixels:
        extended = current + bytes([value])
        if extended in table:
            current = extended
            continue
        emit(table[current], width)
        if next_code < 4095:
            table[extended] = next_code
            next_code += 1
            # The decoder adds each entry one code later than we do, and widens its
            # codes once its table reaches 2**width.
            if next_code > 1 << width:
                width += 1
        else:
            emit(clear, width)
            table, next_code, width = fresh(), end + 1, min_code_size + 1
        current = bytes([value])
    if current:
        emit(table[current], width)
    emit(end, width)
    if bit_count:
        out.append(bit_buffer & 0xFF)
    return bytes(out)


def encode_gif(picture: Picture) -> bytes:
    """*picture* as a single-frame GIF89a."""
    bits = max(1, (len(picture.palette) - 1).bit_length())
    colours = list(picture.palette) + [(0, 0, 0)] * ((1 << bits) - len(picture.palette))
    screen = struct.pack("<HHBBB", picture.width, picture.height, 0x80 | (bits - 1), 0, 0)
    image = struct.pack("<BHHHHB", 0x2C, 0, 0, picture.width, picture.height, 0)
    min_code_size = max(2, bits)
    data = _lzw(b"".join(picture.rows), min_code_size)
    blocks = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    return (
        b"GIF89a"
        + screen
        + b"".join(bytes(c) for c in colours)
        + image
        + bytes([min_code_size])
        + blocks
        + b"\x00"
        + b";"
    )
