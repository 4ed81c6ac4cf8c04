import orjson
import pytest

from regionsync.settings import PLACEHOLDER
from streams import cms, debezium
from streams.capture import CaptureSpec
from streams.errors import PoisonEvent
from streams.events import ChangeKind

SPEC = CaptureSpec()


def envelope(op: str, before=None, after=None, lsn: int = 100, wrap: bool = False) -> bytes:
    value = {"before": before, "after": after, "op": op, "ts_ms": 5,
             "source": {"lsn": lsn, "ts_ms": 4, "table": "documents", "schema": "public"}}
    if wrap:
        value = {"schema": {}, "payload": value}
    return orjson.dumps(value)


def row(**kw):
    base = {"id": "d1", "title": "T", "body": "hello world", "tags": ["a", "b"], "status": "published",
            "updated_at": "2026-01-01T00:00:00Z"}
    base.update(kw)
    return base


KEY = orjson.dumps({"id": "d1"})


def parse(key, value):
    return debezium.parse(key, value, SPEC, "cms.public.documents", 0, 7)


@pytest.mark.parametrize("op", ["r", "c", "u"])
def test_upsert_ops_use_after_row_and_lsn_as_version(op):
    change = parse(KEY, envelope(op, before=row(body="old"), after=row(), lsn=42))
    assert change.kind is ChangeKind.UPSERT
    assert change.version == 42
    assert change.text == "hello world"
    assert change.title == "T" and change.tags == ("a", "b")
    assert change.source.lsn == 42 and change.source.offset == 7 and change.source.op == op


def test_schema_wrapped_envelope_is_accepted():
    change = parse(orjson.dumps({"schema": {}, "payload": {"id": "d1"}}), envelope("c", after=row(), wrap=True))
    assert change.doc_id == "d1" and change.kind is ChangeKind.UPSERT


def test_delete_and_tombstone():
    d = parse(KEY, envelope("d", before=row(), lsn=77))
    assert d.kind is ChangeKind.DELETE and d.version == 77
    t = parse(KEY, None)
    assert t.kind is ChangeKind.DELETE and t.version is None and t.source.op == "tombstone"


def test_unpublished_status_is_a_removal():
    change = parse(KEY, envelope("u", after=row(status="draft")))
    assert change.kind is ChangeKind.DELETE and change.version == 100


def test_toast_placeholder_is_never_text():
    change = parse(KEY, envelope("u", after=row(body=PLACEHOLDER, title="New")))
    assert change.kind is ChangeKind.UPSERT
    assert change.text is None
    assert change.title == "New"


def test_toast_placeholder_takes_the_old_rows_value_under_replica_identity_full():
    # FULL logs the old row whole: an unchanged TOASTed body is the old row's body, known without
    # asking Postgres again, and the change is a title-only one (same content hash as before).
    long_body = "a long body " * 500
    change = parse(KEY, envelope("u", before=row(body=long_body, title="Old"),
                                 after=row(body=PLACEHOLDER, title="New")))
    assert change.text == long_body and change.title == "New"
    assert change.previous_hash is not None and change.previous_hash == debezium_hash(long_body)


def test_toast_placeholder_in_both_rows_stays_unknown():
    change = parse(KEY, envelope("u", before=row(body=PLACEHOLDER), after=row(body=PLACEHOLDER)))
    assert change.text is None


def test_old_row_never_overrides_a_value_the_update_sent():
    change = parse(KEY, envelope("u", before=row(body="old", title="Old"), after=row(body="new", title=PLACEHOLDER)))
    assert change.text == "new" and change.title == "Old"


def debezium_hash(text):
    from streams.events import content_hash

    return content_hash(text)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (KEY, b"{not json", "unparseable_json"),
        (KEY, b"\xff\xfe{}", "invalid_utf8"),
        (KEY, orjson.dumps({"hello": 1}), "wrong_envelope"),
        (KEY, orjson.dumps([1, 2]), "wrong_envelope"),
        (None, envelope("c", after={"title": "x", "body": "y"}), "missing_key"),
        (None, None, "missing_key"),
        (KEY, envelope("c", after=row(body="x" * 300_000)), "document_too_large"),
        (KEY, envelope("c", after=row(body=12)), "bad_field"),
    ],
)
def test_poison_is_classified(key, value, reason):
    with pytest.raises(PoisonEvent) as info:
        parse(key, value)
    assert info.value.reason == reason


def test_cms_event_roundtrip_and_errors():
    ev = cms.validate({"doc_id": "x", "version": 3, "op": "upsert", "document": {"title": "t", "body": "b"}})
    change = cms.parse(b"x", ev.to_bytes(), SPEC, "regionsync.cms.documents", 1, 2)
    assert change.version == 3 and change.text == "b" and change.source.kind == "cms"
    with pytest.raises(cms.CmsEventError, match="version"):
        cms.validate({"doc_id": "x", "version": "3", "op": "upsert", "document": {"body": "b"}})
    with pytest.raises(cms.CmsEventError, match="document.body"):
        cms.validate({"doc_id": "x", "version": 3, "op": "upsert", "document": {"title": "t"}})
    with pytest.raises(cms.CmsEventError, match="unknown field"):
        cms.validate({"doc_id": "x", "version": 3, "op": "delete", "extra": 1})
    with pytest.raises(PoisonEvent) as info:
        cms.parse(b"y", ev.to_bytes(), SPEC, "t", 0, 0)
    assert info.value.reason == "key_mismatch"


def test_jsonl_reports_every_bad_line_and_sends_nothing():
    lines = [
        '{"doc_id": "a", "version": 1, "op": "delete"}',
        "nope",
        '{"doc_id": "b", "version": -1, "op": "delete"}',
    ]
    with pytest.raises(cms.CmsEventError) as info:
        list(cms.read_jsonl(lines))
    assert "line 2" in str(info.value) and "line 3" in str(info.value)
