"""The few Kafka wire-protocol fields a TLS front of a broker must rewrite (pure: bytes in, bytes out).

A Kafka client asks one address for metadata, then connects to each broker at the address the
answer names. A front that only wrapped the broker's port in TLS would hand out the broker's own
plain address, and the client would go round it. So the front (stack/edge.py) rewrites the two
answers that name brokers: Metadata (api key 3, the broker list) and FindCoordinator (api key 10,
a group's coordinator), every version, to name the front instead. Everything else passes through
untouched. The layouts are those of the Apache Kafka protocol guide (kafka.apache.org/protocol):
versions at or above ``FLEXIBLE`` use compact strings and arrays, and tagged fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

METADATA, FIND_COORDINATOR = 3, 10
REWRITTEN = frozenset({METADATA, FIND_COORDINATOR})
FLEXIBLE = {METADATA: 9, FIND_COORDINATOR: 3}


class WireError(ValueError):
    """A frame that does not parse as the version it claims to be."""


@dataclass(frozen=True)
class RequestHead:
    api_key: int
    api_version: int
    correlation_id: int


def request_head(frame: bytes) -> RequestHead:
    """The request header's first three fields (the same in every header version)."""
    if len(frame) < 8:
        raise WireError(f"a request of {len(frame)} bytes has no header")
    return RequestHead(*struct.unpack_from(">hhi", frame, 0))


def correlation_id(frame: bytes) -> int:
    """A response's correlation id (its first field, in every header version)."""
    if len(frame) < 4:
        raise WireError(f"a response of {len(frame)} bytes has no header")
    return int(struct.unpack_from(">i", frame, 0)[0])


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError(f"frame ends at {len(self.data)}, wanted {n} bytes at {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise WireError("an unsigned varint longer than 5 bytes")

    def string(self, flexible: bool) -> bytes | None:
        """A (nullable) string, compact or not; None for null."""
        n = self.uvarint() - 1 if flexible else self.int16()
        return None if n < 0 else self.take(n)

    def tagged_fields(self) -> bytes:
        """The raw bytes of a tagged-field section (kept as they are)."""
        start = self.pos
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())
        return self.data[start:self.pos]


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(value: bytes | None, flexible: bool) -> bytes:
    if flexible:
        return _uvarint(0 if value is None else len(value) + 1) + (value or b"")
    if value is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(value)) + value


def _address(r: _Reader, flexible: bool, host: bytes, port: int) -> bytes:
    """A ``host, port`` pair read and written again naming ``host:port`` (an empty host, an
    error's "no coordinator", is kept)."""
    old = r.string(flexible)
    old_port = r.int32()
    if not old:
        return _string(old, flexible) + struct.pack(">i", old_port)
    return _string(host, flexible) + struct.pack(">i", port)


def _past_header(frame: bytes, flexible: bool, throttle: bool) -> tuple[_Reader, bytearray]:
    """A reader past the response header (and the throttle time, if the version has one), and
    the bytes read so far, kept as they are."""
    r = _Reader(frame)
    r.int32()  # correlation id
    if flexible:
        r.tagged_fields()
    if throttle:
        r.int32()  # throttle_time_ms
    return r, bytearray(frame[:r.pos])


def _metadata(frame: bytes, version: int, host: bytes, port: int) -> bytes:
    flexible = version >= FLEXIBLE[METADATA]
    r, out = _past_header(frame, flexible, throttle=version >= 3)
    count = r.uvarint() - 1 if flexible else r.int32()
    out += _uvarint(count + 1) if flexible else struct.pack(">i", count)
    for _ in range(max(count, 0)):
        out += r.take(4)  # node_id
        out += _address(r, flexible, host, port)
        if version >= 1:
            out += _string(r.string(flexible), flexible)  # rack
        if flexible:
            out += r.tagged_fields()
    return bytes(out) + frame[r.pos:]  # topics and the rest: as they were


def _find_coordinator(frame: bytes, version: int, host: bytes, port: int) -> bytes:
    flexible = version >= FLEXIBLE[FIND_COORDINATOR]
    r, out = _past_header(frame, flexible, throttle=version >= 1)
    if version >= 4:  # a list of coordinators, one per key asked for
        count = r.uvarint() - 1
        out += _uvarint(count + 1)
        for _ in range(max(count, 0)):
            out += _string(r.string(True), True)  # key
            out += r.take(4)  # node_id
            out += _address(r, True, host, port)
            out += r.take(2)  # error_code
            out += _string(r.string(True), True)  # error_message
            out += r.tagged_fields()
        return bytes(out) + frame[r.pos:]
    out += r.take(2)  # error_code
    if version >= 1:
        out += _string(r.string(flexible), flexible)  # error_message
    out += r.take(4)  # node_id
    out += _address(r, flexible, host, port)
    return bytes(out) + frame[r.pos:]


def rewrite_response(head: RequestHead, frame: bytes, host: str, port: int) -> bytes:
    """``frame`` (a response without its length prefix) naming ``host:port`` as every broker's
    address where it names a broker; other responses as they are."""
    if head.api_key == METADATA:
        return _metadata(frame, head.api_version, host.encode(), port)
    if head.api_key == FIND_COORDINATOR:
        return _find_coordinator(frame, head.api_version, host.encode(), port)
    return frame
