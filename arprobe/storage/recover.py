"""Reopen a store whose writer was killed: clear HDF5's "open for SWMR write" superblock flags.

HDF5 marks the superblock while a writer has the file open and refuses to open it for writing
again until the mark is cleared (the ``h5clear -s`` tool does this; it is not part of h5py).
The data themselves are consistent up to the last flush, which is what resume relies on. We
clear the flag byte of a version 2/3 superblock and rewrite its checksum (Jenkins lookup3, as
HDF5 computes it), after checking that our checksum reproduces the stored one.
"""

from __future__ import annotations

import struct
from pathlib import Path

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` over bytes, as HDF5's H5_checksum_lookup3."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _M
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M
        a = (a - c) & _M
        a ^= _rot(c, 4)
        c = (c + b) & _M  # noqa: E702 - the mix() of lookup3
        b = (b - a) & _M
        b ^= _rot(a, 6)
        a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M
        c ^= _rot(b, 8)
        b = (b + a) & _M  # noqa: E702
        a = (a - c) & _M
        a ^= _rot(c, 16)
        c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M
        b ^= _rot(a, 19)
        a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M
        c ^= _rot(b, 4)
        b = (b + a) & _M  # noqa: E702
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:] + bytes(12 - length)  # the missing bytes of the last block add nothing
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b
    c = (c - _rot(b, 14)) & _M  # noqa: E702 - the final() of lookup3
    a ^= c
    a = (a - _rot(c, 11)) & _M  # noqa: E702
    b ^= a
    b = (b - _rot(a, 25)) & _M  # noqa: E702
    c ^= b
    c = (c - _rot(b, 16)) & _M  # noqa: E702
    a ^= c
    a = (a - _rot(c, 4)) & _M  # noqa: E702
    b ^= a
    b = (b - _rot(a, 14)) & _M  # noqa: E702
    c ^= b
    c = (c - _rot(b, 24)) & _M  # noqa: E702
    return c


def clear_write_flags(path: str | Path) -> bool:
    """Clear the superblock's file-consistency flags; True if they were set.

    Raises ValueError for a file whose superblock we do not recognise (then nothing is written).
    """
    with open(path, "r+b") as f:
        head = f.read(64)
        if head[:8] != _SIGNATURE or head[8] not in (2, 3):
            raise ValueError("not an HDF5 file with a version 2/3 superblock")
        size_of_offsets = head[9]
        end = 12 + 4 * size_of_offsets  # signature, version, sizes, flags, then four addresses
        (stored,) = struct.unpack("<I", head[end : end + 4])
        if lookup3(head[:end]) != stored:
            raise ValueError("superblock checksum does not match; refusing to modify the file")
        if head[11] == 0:
            return False
        patched = head[:11] + b"\x00" + head[12:end]
        f.seek(0)
        f.write(patched + struct.pack("<I", lookup3(patched)))
        return True


def read_superblock(path: str | Path) -> dict:
    """{"version", "flags", "eof"} of a version 2/3 superblock, its checksum verified.

    Raises ValueError naming what is wrong: not HDF5, an older superblock we do not parse (then
    {"version"} only is returned instead), a damaged superblock.
    """
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:8] != _SIGNATURE:
        raise ValueError("it is not an HDF5 file")
    if head[8] not in (2, 3):
        return {"version": head[8]}
    size_of_offsets = head[9]
    if size_of_offsets not in (2, 4, 8):
        raise ValueError("its HDF5 superblock is damaged")
    end = 12 + 4 * size_of_offsets
    if len(head) < end + 4:
        raise ValueError("it is truncated (shorter than its HDF5 superblock)")
    (stored,) = struct.unpack("<I", head[end : end + 4])
    if lookup3(head[:end]) != stored:
        raise ValueError("its HDF5 superblock is damaged (checksum mismatch)")
    o = size_of_offsets
    eof = int.from_bytes(head[12 + 2 * o : 12 + 3 * o], "little")
    return {"version": head[8], "flags": head[11], "eof": eof}
