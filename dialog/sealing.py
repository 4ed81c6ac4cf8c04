"""Crypto-shredding of session events: what a customer said is sealed with a key of their session.

Events are immutable and copied to every region, so erasing a conversation cannot mean deleting
its records. Instead every event's personal payload (what the customer said, what the assistant
answered, slot values, tool arguments and results, the customer id) is encrypted with a key that
belongs to that one session and lives only in the regions' state stores (:mod:`dialog.keys`).
Erasing the session deletes the key everywhere: the records left in the log, in its copies and in
any backup of the broker can no longer be read by anyone.

What stays in clear text is what folding needs and what says nothing about the customer: the
event's identity and order (type, session id, seq, event id, time, origin region, epoch) and a few
labels (intent, slot and tool names, the sources a reply cited, the handoff queue). A sealed
event carries its sealed fields in one ``"sealed"`` member::

    {"type": "user_utterance", "v": 1, "session_id": ..., "seq": 3, ..., "sealed": "AbC..."}

``sealed`` is base64url of a 12-byte random nonce followed by the AES-256-GCM ciphertext of an
orjson object holding the sealed fields; ``kid`` (in clear) names which of the session's keys: the
region that made it. A session has one key, made by the first region that wrote it and copied to
the others, except after a split brain: two regions that both took turns of a session neither had
heard of each made one, and each event names its own. The associated data binds the ciphertext to
the event's session, id, type and key id: a sealed payload moved to another event does not open.

Pure functions on the wire dict (no I/O, no key lookup): :mod:`dialog.events` calls them.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dialog.errors import DialogError

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
SEALED = "sealed"  # the wire member that holds the sealed fields
KID = "kid"  # the wire member that names the key (the region that made it)
AAD_PREFIX = b"regionsync-dialog-event/1"

# The fields of each event type that are sealed, with what a reader that has no key gets in
# their place (the session was erased, or its key never reached this region).
SEALED_FIELDS: dict[str, dict[str, Any]] = {
    "session_started": {"customer_id": ""},
    "user_utterance": {"text": ""},
    "slot_filled": {"value": None},
    "tool_called": {"arguments": {}, "result": None, "error": None},
    "bot_replied": {"text": "", "confirmed": []},
    "handoff_requested": {"reason": ""},
}


class SealError(DialogError):
    """A sealed payload that does not open with the session's key (tampered, or another key)."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _aad(data: dict[str, Any]) -> bytes:
    parts = (AAD_PREFIX, str(data.get("session_id", "")).encode(), str(data.get("event_id", "")).encode(),
             str(data.get("type", "")).encode(), str(data.get(KID, "")).encode())
    return b"\x1f".join(parts)


def seal(data: dict[str, Any], key: bytes, kid: str) -> dict[str, Any]:
    """The wire dict with this type's personal fields replaced by one sealed member (and the key's
    id). A type with nothing personal comes back as it is."""
    names = SEALED_FIELDS.get(str(data.get("type")))
    if not names:
        return data
    secret = {name: data[name] for name in names if name in data}
    out = {k: v for k, v in data.items() if k not in names}
    out[KID] = kid
    nonce = os.urandom(NONCE_BYTES)
    box = AESGCM(key).encrypt(nonce, orjson.dumps(secret), _aad(out))
    out[SEALED] = base64.urlsafe_b64encode(nonce + box).decode("ascii")
    return out


def is_sealed(data: dict[str, Any]) -> bool:
    return SEALED in data


def open_sealed(data: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The wire dict with its sealed fields back in place; raises :class:`SealError`."""
    token = data.get(SEALED)
    if not isinstance(token, str):
        raise SealError(f"'{SEALED}' must be a string, got {type(token).__name__}")
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(data))
        secret = orjson.loads(plain)
    except (ValueError, InvalidTag, orjson.JSONDecodeError) as exc:
        raise SealError(f"sealed payload of event {data.get('event_id')!r} does not open: "
                        f"{type(exc).__name__}") from None
    if not isinstance(secret, dict):
        raise SealError(f"sealed payload of event {data.get('event_id')!r} is not an object")
    out = {k: v for k, v in data.items() if k not in (SEALED, KID)}
    out.update(secret)
    return out


def shred(data: dict[str, Any]) -> dict[str, Any]:
    """The wire dict as a reader without the key sees it: sealed fields at their blank values."""
    out = {k: v for k, v in data.items() if k not in (SEALED, KID)}
    out.update(SEALED_FIELDS.get(str(data.get("type")), {}))
    return out
