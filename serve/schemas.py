"""The region service's request and response models: validation and the OpenAPI spec at once.

Text fields go through :func:`clean_text`: valid UTF-8, no control characters, not only
whitespace. The request models whose limits come from the settings are built where their routes
are (serve/routes.py)."""

# No ``from __future__ import annotations``: FastAPI and pydantic read these types at run time.
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from indexer.ports import Hit
from serve.answers import Composed, source_label

SESSION_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
INTENT = r"^[a-z][a-z0-9_]{0,63}$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def clean_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid UTF-8 (lone surrogate)") from exc
    if _CONTROL.search(value):
        raise ValueError("text contains control characters")
    if not value.strip():
        raise ValueError("text is empty (only whitespace)")
    return value


class Error(BaseModel):
    detail: str


class Refused(BaseModel):
    detail: str
    active_region: str


class Source(BaseModel):
    kind: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    lsn: int | None = None
    op: str | None = None
    ts_ms: int | None = None


class SearchHit(BaseModel):
    doc_id: str
    chunk: int
    title: str
    text: str
    score: float
    version: int
    tags: list[str]
    source: Source


class SearchResponse(BaseModel):
    region: str
    query: str
    hits: list[SearchHit]


class Citation(BaseModel):
    n: int
    label: str
    doc_id: str
    chunk: int
    title: str
    score: float
    version: int
    source: Source


class AskResponse(BaseModel):
    region: str
    question: str
    answer: str
    composer: str
    sources: list[Citation]
    session_id: str | None = None
    last_seq: int | None = None


class TurnOut(BaseModel):
    region: str
    session_id: str
    reply: str
    sources: list[str]
    confirmed: list[str]
    handoff: bool
    last_seq: int
    events: int
    citations: list[Citation] = []


class TurnView(BaseModel):
    seq: int
    role: str
    text: str
    ts_ms: int
    sources: list[str]


class ToolCallView(BaseModel):
    seq: int
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None


class SessionOut(BaseModel):
    region: str
    session_id: str
    status: str
    intent: str | None
    slots: dict[str, Any]
    last_seq: int
    turns: list[TurnView]
    tool_calls: list[ToolCallView]
    confirmed: list[str]
    handoff_reason: str | None
    origin: str


class Check(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool


class Readiness(BaseModel):
    region: str
    ready: bool
    role: str
    checks: dict[str, Check]


class Health(BaseModel):
    status: str
    region: str


class Promoted(BaseModel):
    region: str
    active: str
    epoch: int
    previous: str | None
    changed: bool
    published: bool  # the promotion is on this region's control topic (else it is published later)
    # Per other region and partition of its dialog topic: the first source offset this region had
    # not received; that region's older-epoch turns from there on are set aside (dialog/fence.py).
    cut: dict[str, dict[str, int]]
    dialog_positions: dict[str, int]
    # How long each step took: the lag check, the flip of the active-region row (including any wait
    # for a turn in flight elsewhere, and a fence), a turn of this region in flight, the catch-up.
    seconds: dict[str, float] = {}


class Erased(BaseModel):
    """An erasure taken: published to the log, the key deleted in this region; every other region
    deletes its copy of the key and the session's state when it folds the erasure."""

    region: str
    session_id: str
    known: bool  # this region knew the session (an unknown id is erased all the same: it may be in flight)
    seq: int  # the erasure event's sequence number in the session


class Conflicts(BaseModel):
    """Turns an old active region accepted that the promoted region never received (written after
    the promotion, or not replicated before the old region was lost): folded nowhere, listed here
    with the whole event, the same list in every region."""

    region: str
    count: int
    fenced: list[dict[str, Any]]


SlotValue = Annotated[str, Field(max_length=200)] | bool | Annotated[int, Field(ge=-(2**53), le=2**53)] | None


def source_of(hit: Hit) -> Source:
    src = hit.source or {}
    return Source(**{k: src.get(k) for k in Source.model_fields})


def search_hit(hit: Hit) -> SearchHit:
    return SearchHit(
        doc_id=hit.doc_id, chunk=hit.chunk_index, title=hit.title, text=hit.text, score=hit.score,
        version=hit.version, tags=list(hit.tags), source=source_of(hit),
    )


def citation(n: int, hit: Hit) -> Citation:
    return Citation(n=n, label=source_label(hit), doc_id=hit.doc_id, chunk=hit.chunk_index, title=hit.title,
                    score=hit.score, version=hit.version, source=source_of(hit))


def ask_response(
    region: str, question: str, composed: Composed, session_id: str | None = None, last_seq: int | None = None
) -> AskResponse:
    return AskResponse(
        region=region, question=question, answer=composed.text, composer=composed.composer,
        sources=[citation(n, h) for n, h in enumerate(composed.cited, 1)], session_id=session_id, last_seq=last_seq,
    )
