"""``python -m service.cli`` runs the ``gga`` command line."""

import sys

from service.cli import main

sys.exit(main())
