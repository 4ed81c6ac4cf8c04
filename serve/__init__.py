"""A region's HTTP service: readiness, search and answers with sources, dialog turns, promotion,
metrics. ``regionsync serve --region R`` (or ``python -m serve --region R``) runs one."""
