"""``python -m gga_cli`` runs the ``gga`` command line."""

import sys

from gga_cli import main

sys.exit(main())
