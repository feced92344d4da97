"""``python -m disco.cli``: the ``disco`` command."""

from disco.cli.commands import main

raise SystemExit(main())
