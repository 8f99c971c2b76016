"""``python -m irem.cli``: the ``irem`` command."""

import sys

from irem.cli import main

sys.exit(main())
