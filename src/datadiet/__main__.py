"""``python -m datadiet``: the command line (what ``torchrun -m datadiet train ...`` runs on each rank)."""

import sys

from .cli.main import main

sys.exit(main())
