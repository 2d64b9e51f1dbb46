"""``python -m cli`` runs the ``gga`` command line."""

import sys

from cli import main

sys.exit(main())
