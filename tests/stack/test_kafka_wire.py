"""The edge's rewriting of broker addresses (stack/kafka_wire.py), on frames built by hand from the
Kafka protocol guide's layouts: every version family of Metadata and FindCoordinator, the rest of
each frame kept byte for byte, other answers untouched."""

from __future__ import annotations

import struct

import pytest

from stack.kafka_wire import (
    FIND_COORDINATOR,
    METADATA,
    RequestHead,
    WireError,
    correlation_id,
    request_head,
    rewrite_response,
)

CID = 77
TAIL = b"\x00\x00\x00\x01topics-and-the-rest"


def s16(text: str | None) -> bytes:
    return struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text.encode()


def compact(text: str | None) -> bytes:
    return b"\x00" if text is None else bytes([len(text) + 1]) + text.encode()  # short strings: one-byte varint


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def metadata(version: int, brokers: list[tuple[int, str, int, str | None]]) -> bytes:
    flexible = version >= 9
    out = i32(CID) + (b"\x00" if flexible else b"")  # header; v1 header: no tagged fields
    if version >= 3:
        out += i32(5)  # throttle
    out += bytes([len(brokers) + 1]) if flexible else i32(len(brokers))
    for node, host, port, rack in brokers:
        out += i32(node) + (compact(host) if flexible else s16(host)) + i32(port)
        if version >= 1:
            out += compact(rack) if flexible else s16(rack)
        if flexible:
            out += b"\x01\x05\x02hi"  # one tagged field (tag 5, 2 bytes): kept as it is
    return out + TAIL


@pytest.mark.parametrize("version", [0, 1, 2, 3, 8, 9, 12])
def test_metadata_names_the_edge_for_every_broker_and_keeps_the_rest(version: int) -> None:
    frame = metadata(version, [(1, "127.0.0.1", 9092, "r1"), (2, "broker-b", 9093, None)])
    out = rewrite_response(RequestHead(METADATA, version, CID), frame, "edge.example", 19392)
    rack1, rack2 = ("r1", None) if version >= 1 else (None, None)
    assert out == metadata(version, [(1, "edge.example", 19392, rack1), (2, "edge.example", 19392, rack2)])
    assert correlation_id(out) == CID


def find_coordinator(version: int, host: str, port: int, error: int = 0) -> bytes:
    flexible = version >= 3
    out = i32(CID) + (b"\x00" if flexible else b"")
    if version >= 1:
        out += i32(0)
    if version >= 4:
        out += bytes([2]) + compact("group-a") + i32(1) + compact(host) + i32(port) + struct.pack(">h", error)
        return out + compact(None) + b"\x00" + b"\x00"
    out += struct.pack(">h", error)
    if version >= 1:
        out += compact("msg") if flexible else s16("msg")
    out += i32(1) + (compact(host) if flexible else s16(host)) + i32(port)
    return out + (b"\x00" if flexible else b"")


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_find_coordinator_names_the_edge(version: int) -> None:
    out = rewrite_response(RequestHead(FIND_COORDINATOR, version, CID), find_coordinator(version, "127.0.0.1", 9092),
                           "edge.example", 19392)
    assert out == find_coordinator(version, "edge.example", 19392)


def test_no_coordinator_stays_no_coordinator() -> None:
    frame = find_coordinator(2, "", -1, error=15)  # COORDINATOR_NOT_AVAILABLE: nothing to point at
    assert rewrite_response(RequestHead(FIND_COORDINATOR, 2, CID), frame, "edge.example", 19392) == frame


def test_other_answers_pass_untouched_and_bad_frames_say_so() -> None:
    produce_answer = i32(CID) + b"\x00" * 20
    assert rewrite_response(RequestHead(0, 9, CID), produce_answer, "edge", 1) is produce_answer
    assert request_head(struct.pack(">hhi", 3, 12, 9) + b"rest") == RequestHead(3, 12, 9)
    with pytest.raises(WireError):
        request_head(b"\x00\x03")
    with pytest.raises(WireError):  # cut short inside the broker list
        rewrite_response(RequestHead(METADATA, 1, CID), metadata(1, [(1, "h", 1, None)])[:12], "edge", 1)
