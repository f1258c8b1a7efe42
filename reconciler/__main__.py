"""``python -m reconciler`` is the ``kucero`` command."""

import sys

from reconciler.cli import main

sys.exit(main())
