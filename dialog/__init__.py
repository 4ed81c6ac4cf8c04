"""Event-sourced dialog sessions that survive a regional failover.

Modules, outside in:

* ``events``   frozen, versioned session events and their wire format (orjson);
* ``state``    the state of one session; ``reducer`` folds events into it (pure, singledispatch);
* ``session``, ``manager``, ``handlers/``   one customer message -> events -> reply;
* ``kafka_io`` all Kafka I/O (publisher with acks=all, dead letters, client configs);
* ``store``    a region's state store (Postgres; in memory for tests): states + positions, one transaction;
* ``snapshots`` all session states + positions in S3, manifest last;
* ``worker``   folds the topic into the store and owns the loop, rebuild included; ``rebuild``
  restores an empty store from a snapshot (called by the worker; it does not know the worker);
* ``cli``      ``regionsync dialog rebuild|show|worker``; ``bench`` the rebuild benchmark;
* ``loadgen``  synthetic conversations for the benchmark and tests.
"""
