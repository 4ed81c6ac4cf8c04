"""Replication between regions: each region's topics copied into the others' brokers.

One replicator per ordered pair of regions, running in the target region (consume remote,
produce local, as MirrorMaker 2 is deployed). Remote topics are named after their source region
(``east.regionsync.dialog.events`` on north's broker: :mod:`mirror.policy`), so nothing loops;
each copied record keeps its key, value, headers, timestamp and partition and gains provenance
headers (source region, topic, partition, offset); the source position is checkpointed in the
target region's own database after the target broker acknowledged the copies, so a replicator
killed at any point neither skips nor loses a record (it may copy some twice: consumers absorb
duplicates by document version and by session sequence / event id).
"""
