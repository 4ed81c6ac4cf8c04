"""``regionsync demo``: the main job, end to end, on the embedded default stack.

Starts the stack, loads real text (the Python standard library's docstrings) into the CMS table,
lets Debezium snapshot it into both regions, then makes live edits in Postgres and through the
CMS producer API and shows the same search answered by each region, with sources and lag.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg

from regionsync.settings import Settings

QUERY = "parse a JSON document into Python objects"
_EMBEDDER: Any = None  # loaded once for the demo's searches (the model takes seconds to load)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded stack with real text and live edits")
    p.add_argument("--docs", type=int, default=300, help="documents to load from the stdlib corpus (default 300)")
    p.add_argument("--query", default=QUERY, help="the search shown before and after the edits")
    p.add_argument("--keep-up", action="store_true", help="leave the stack running afterwards")
    p.set_defaults(func=run)


def _step(msg: str) -> float:
    print(f"\n== {msg}", flush=True)
    return time.monotonic()


def run(args: argparse.Namespace, settings: Settings) -> int:
    from bench import corpus
    from drills import verify
    from stack import stack

    print(f"regionsync demo: state dir {settings.state_dir}; regions {', '.join(settings.regions)}")
    t = _step(f"1. starting the embedded stack: per region an object store (SeaweedFS), a broker (tansu on it), "
              f"Postgres and Milvus; in {settings.source_region} also Kafka Connect + Debezium")
    try:
        stack.start_infra(settings)
        print(f"   up in {time.monotonic() - t:.1f}s")

        docs = corpus.demo_documents(args.docs)
        t = _step(f"2. loading {len(docs)} documents (docstrings of the Python standard library) into Postgres")
        with psycopg.connect(settings.pg_dsn()) as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO documents (id, title, body, tags, status) VALUES (%s, %s, %s, %s, 'published') "
                    "ON CONFLICT (id) DO UPDATE SET title = excluded.title, body = excluded.body, "
                    "tags = excluded.tags, status = 'published', updated_at = now()",
                    [(d.id, d.title, d.body, list(d.tags)) for d in docs],
                )
        print(f"   committed in {time.monotonic() - t:.1f}s")
        _cms_seed(settings)

        t = _step("3. Debezium snapshot -> change agent (chunk + embed once) -> an indexer per region")
        stack.start_workers(settings)
        print(f"   connector: {stack.apply_connector(settings)}")
        _converge(settings, verify, t, timeout=600)
        _search_all(settings, args.query)

        t = _step("4. live edits: Postgres UPDATE/DELETE and CMS events through the producer API")
        _live_edits(settings, docs)
        _converge(settings, verify, t, timeout=120)
        _search_all(settings, args.query)

        _step("5. per-region lag (records on the chunks topic not yet applied) and replication between regions")
        info = stack.status(settings)
        for region, r in info["regions"].items():
            print(f"   {region:<6} lag={r['lag']}  milvus={r['milvus_uri']}")
            for source, row in (r.get("replication") or {}).items():
                print(f"          from {source}: {row['lag_records']} records not copied yet, "
                      f"complete up to {row['lag_seconds']:.1f}s ago")

        _previous_conversation(settings)
        _conversation(settings)
    finally:
        if not args.keep_up:
            _step("stopping the stack (data stays in the state dir; --keep-up leaves it running)")
            stack.down(settings)
        else:
            print("\nstack still running: `regionsync stack status`, `regionsync search TEXT --region north`, "
                  "`regionsync stack down`")
    return 0


def _converge(settings: Settings, verify: Any, started: float, timeout: float) -> None:
    reports = verify.wait_converged(settings, timeout=timeout)
    took = time.monotonic() - started
    for region, rep in reports.items():
        state = "matches Postgres" if rep.matches else f"DIFFERS ({len(rep.differences)} differences)"
        print(f"   {region:<6} {rep.documents} documents, {rep.chunks} chunks: {state}")
        for line in rep.differences[:5]:
            print(f"      {line}")
    print(f"   every region converged in {took:.1f}s" if all(r.matches for r in reports.values())
          else f"   not converged after {took:.1f}s")


def _search_all(settings: Settings, query: str) -> None:
    from embedding.runtime import embedder_from_settings
    from indexer.search import search_region

    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = embedder_from_settings(settings)
    print(f"   search {query!r}:")
    for region in settings.regions:
        hits = search_region(settings, region, query, 3, embedder=_EMBEDDER)
        print(f"   [{region}]")
        for rank, hit in enumerate(hits, 1):
            src = hit.source or {}
            where = f"{src.get('kind')} {src.get('topic')}[{src.get('partition')}]@{src.get('offset')}"
            if src.get("lsn") is not None:
                where += f" lsn={src.get('lsn')}"
            print(f"     {rank}. {hit.title} ({hit.doc_id}#{hit.chunk_index}) score={hit.score:.3f} "
                  f"v={hit.version} <- {where}")


LAST_SESSION = "demo-last-session.json"


def _previous_conversation(settings: Settings) -> None:
    """The conversation of the previous demo on this state dir, as every region holds it now:
    a restart of the whole stack keeps the log, the stores and the snapshots."""
    import orjson
    import requests

    from serve.auth import ASSISTANT
    from serve.tls import http_session

    path = settings.state_dir / LAST_SESSION
    if not path.exists():
        return
    last = orjson.loads(path.read_bytes())
    _step(f"5b. the previous demo's conversation (session {last['session']}, {last['turns']} turns written in "
          f"{last['region']}), in every region after the restart")
    for region in settings.regions:
        try:
            resp = http_session(settings, ASSISTANT).get(f"{settings.serve_url(region)}/sessions/{last['session']}",
                                                         timeout=30)
            if resp.status_code == 200:
                body = resp.json()
                print(f"   {region:<6} holds it: {len(body['turns'])} turns, last_seq={body['last_seq']}, "
                      f"first message {body['turns'][0]['text']!r}")
            else:
                print(f"   {region:<6} MISSING ({resp.status_code}: {resp.text[:120]})")
        except requests.RequestException as exc:
            print(f"   {region:<6} no answer: {exc}")


def _conversation(settings: Settings) -> None:
    """A customer talks to the active region's service: a cited answer, an order inquiry through
    the order tool, then the session as the region holds it."""
    import secrets

    import orjson

    from serve.client import RegionClient
    from serve.roles import active_region

    active = active_region(settings)
    client = RegionClient(settings, active, timeout_s=120)
    session = f"demo-{secrets.token_hex(3)}"
    _step(f"6. a conversation in the active region ({active}, {client.base}), session {session}")
    ask = client.ask("How do I read a JSON file?", session_id=session)
    print(f"   customer: How do I read a JSON file?\n   assistant: {ask['answer']}")
    for src in ask["sources"]:
        print(f"      [{src['n']}] {src['title']} <- {src['label']}")
    turn = client.json("POST", f"/sessions/{session}/turns", json={
        "text": "And where is my order A-1001?", "intent": "inquire_order", "slots": {"order_id": "A-1001"}})
    print(f"   customer: And where is my order A-1001?\n   assistant: {turn['reply']}  (tool order_lookup)")
    state = client.json("GET", f"/sessions/{session}")
    print(f"   GET /sessions/{session}: {len(state['turns'])} turns, tool calls "
          f"{[c['name'] for c in state['tool_calls']]}, last_seq={state['last_seq']}, origin={state['origin']}")
    (settings.state_dir / LAST_SESSION).write_bytes(orjson.dumps(
        {"session": session, "region": active, "turns": len(state["turns"]), "last_seq": state["last_seq"]}))


def _cms_seed(settings: Settings) -> None:
    version = int(time.time() * 1_000_000)
    _publish_jsonl(settings, [
        {"doc_id": "cms:json-faq", "version": version, "op": "upsert",
         "document": {"title": "FAQ: JSON", "tags": ["faq"], "body": "Python reads JSON with the json module."}},
        {"doc_id": "cms:holiday-hours", "version": version, "op": "upsert",
         "document": {"title": "Holiday opening hours", "tags": ["notice"],
                      "body": "Over the holidays the help desk answers from 10:00 to 14:00."}},
    ])
    print("   CMS publish (JSON Lines): cms:json-faq, cms:holiday-hours (documents with no database row)")


def _publish_jsonl(settings: Settings, events: list[dict[str, Any]]) -> None:
    import orjson

    from streams.publisher import publish_jsonl

    path = settings.state_dir / "demo-events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    with open(path, encoding="utf-8") as fh:
        publish_jsonl(settings, fh)


def _live_edits(settings: Settings, docs: list[Any]) -> None:
    json_doc = next((d for d in docs if d.id == "py:json"), docs[0])
    others = [d for d in docs if d.id != json_doc.id]
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE documents SET body = body || %s WHERE id = %s",
            ("\n\nEdited live: json.loads() turns a JSON string into dicts, lists, str, int, float, bool and None.",
             json_doc.id),
        )
        print(f"   UPDATE body of {json_doc.id} (re-embedded)")
        conn.execute("UPDATE documents SET title = title || ' (reviewed)', tags = tags || '{reviewed}' WHERE id = %s",
                     (others[0].id,))
        print(f"   UPDATE title/tags of {others[0].id} (metadata only: no embedding)")
        conn.execute("UPDATE documents SET status = 'archived' WHERE id = %s", (others[1].id,))
        print(f"   unpublish {others[1].id} (status 'archived': removed from every region)")
        conn.execute("DELETE FROM documents WHERE id = %s", (others[2].id,))
        print(f"   DELETE {others[2].id} (delete + tombstone)")
    # CMS events go through the same path as `regionsync publish FILE`: a JSON Lines file,
    # validated line by line, then published with acks=all.
    version = int(time.time() * 1_000_000)  # microseconds: strictly increasing per document
    _publish_jsonl(settings, [
        {"doc_id": "cms:json-faq", "version": version, "op": "upsert",
         "document": {"title": "FAQ: reading JSON files", "tags": ["faq"],
                      "body": "To read a JSON file, open it and call json.load(fp); json.loads(s) parses a string. "
                              "Both return plain Python objects: dict, list, str, int, float, bool and None."}},
        {"doc_id": "cms:holiday-hours", "version": version + 1, "op": "delete"},
    ])
    print("   CMS publish (JSON Lines): update cms:json-faq (re-embedded), delete cms:holiday-hours")
