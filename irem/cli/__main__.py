"""``python -m irem.cli``: the ``irem`` command."""

from irem.cli import main

raise SystemExit(main())
