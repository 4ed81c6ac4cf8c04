"""The fault suite: ``regionsync faults``. What the pipeline survives, counted.

Each scenario injects one kind of fault into the embedded stack many times, at random moments
drawn from a seed, under a live workload (drills/workload.py: document edits in Postgres and
customers holding conversations through a region's API, everything acknowledged recorded), and
ends each trial by comparing every region with the source and every region's sessions with a
fold of the dialog log (checks.py). The figures of all trials become one row per scenario
(figures.py, table.py), the way Jepsen-style suites report: trials, faults injected, records
lost, stale documents, duplicates absorbed, time to converge.

Layout: the pure parts (trial plans from a seed, figures, the table, the hostile-event
strategies) apart from the I/O (context.py, checks.py, one module per scenario, runner.py).
"""
