"""What crosses between regions and under which name (mirror/policy.py), and the replicator's
bookkeeping of one partition (mirror/replicator.py ``PartitionState``), pure."""

from __future__ import annotations

from mirror import policy
from mirror.partition_state import PartitionState
from mirror.provenance import copy_headers, provenance
from regionsync.settings import Settings

S = Settings(regions=["east", "north", "west"])


def test_remote_topics_are_named_after_their_source_region() -> None:
    assert policy.remote_topic("east", "regionsync.dialog.events") == "east.regionsync.dialog.events"
    assert policy.topic_in("north", "east", "t") == "east.t" and policy.topic_in("east", "east", "t") == "t"
    assert policy.origin_of("east.regionsync.dialog.events", "north", S.regions) == "east"
    assert policy.origin_of("regionsync.dialog.events", "north", S.regions) == "north"


def test_knowledge_flows_from_the_source_dialog_and_control_everywhere_heal_requests_to_the_source() -> None:
    assert set(policy.replicated_topics(S, "east", "north")) == {S.dialog_topic, S.control_topic, S.chunks_topic}
    assert set(policy.replicated_topics(S, "north", "east")) == {S.dialog_topic, S.control_topic, S.heal_topic}
    assert set(policy.replicated_topics(S, "north", "west")) == {S.dialog_topic, S.control_topic}
    assert policy.chunks_topic_in(S, "east") == S.chunks_topic
    assert policy.chunks_topic_in(S, "west") == f"east.{S.chunks_topic}"
    assert policy.inbound_topics(S, "north", S.dialog_topic) == [
        f"east.{S.dialog_topic}", S.dialog_topic, f"west.{S.dialog_topic}"]


def test_nothing_loops_a_remote_topic_is_never_replicated_again() -> None:
    for source, target in S.mirror_pairs():
        for topic in policy.replicated_topics(S, source, target):
            assert policy.origin_of(topic, source, S.regions) == source


def test_provenance_travels_in_headers_and_replaces_a_stale_one() -> None:
    headers = copy_headers([("trace", b"x"), ("regionsync.source.offset", b"999")], "east", "t", 2, 41)
    assert ("trace", b"x") in headers
    found = provenance(headers)
    assert found is not None and (found.region, found.topic, found.partition, found.offset) == ("east", "t", 2, 41)
    assert provenance([("trace", b"x")]) is None


def test_a_partition_is_complete_up_to_the_last_quiet_probe_at_its_end() -> None:
    st = PartitionState(next_offset=0, fresh_ms=1000)
    st.copied(10, newest_ts_ms=5000)
    assert st.lag == 0 and st.fresh_ms == 5000
    st.probed(end=25, at_ms=9000, quiet=False)  # records arrive: behind
    assert st.lag == 15 and st.lag_seconds(9000) == 4.0
    st.copied(25, newest_ts_ms=8500)
    st.probed(end=25, at_ms=10_000, quiet=True)  # nothing new for a whole window, at the end
    assert st.lag == 0 and st.lag_seconds(10_000) == 0.0
    # tansu's ListOffsets can answer below the real end: a quiet partition past it is complete.
    st.probed(end=3, at_ms=11_000, quiet=True)
    assert st.lag == 0 and st.fresh_ms == 11_000
    # Paused or cut off: no quiet probe, the age of what may be missing grows.
    st.probed(end=40, at_ms=20_000, quiet=False)
    assert st.lag == 15 and st.lag_seconds(20_000) == 9.0
