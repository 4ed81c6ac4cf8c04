"""``regionsync bench``: the pipeline measured against its own limit and against the tool a user
would pick instead (LangChain's indexing API), on the embedded stack, in one run.

One module per measurement: :mod:`.embed_limit` (the model alone), :mod:`.throughput` (changed
documents, unchanged-text updates, deletes), :mod:`.freshness`, :mod:`.peer`, :mod:`.search` and
:mod:`.http_search` (the index alone, then through each region's service), :mod:`.dialog_rebuild`,
:mod:`.rss`; :mod:`.tracker` decides when a change has reached every region, :mod:`.runner` runs
the phases in order on a stack of its own (:mod:`.stackrun`), :mod:`.report` prints the table and
writes the JSON, :mod:`.cli` is the command.

Every figure that is compared is a ratio of two measurements taken in the same run, so the
comparison holds on a noisy shared machine even when the absolute numbers move.
"""
