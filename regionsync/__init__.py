"""regionsync: CLI, settings and the embedded stack that ties connectors/, streams/, indexer/ and dialog/ together."""
