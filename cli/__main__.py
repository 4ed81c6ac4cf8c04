"""``python -m cli``: the ``regionsync`` command without its console script."""

import sys

from cli.main import main

sys.exit(main())
