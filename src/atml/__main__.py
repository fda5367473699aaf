"""``python -m atml``: the command line (:mod:`atml.cli`)."""

from atml.cli import main

raise SystemExit(main())
