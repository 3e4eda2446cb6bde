"""``python -m pspsim`` runs the command line."""

import sys

from pspsim.cli.main import main

sys.exit(main())
