"""``python -m fastnn.bench``: the same as the ``fastnn-bench`` command."""

import sys

from .cli import main

sys.exit(main())
