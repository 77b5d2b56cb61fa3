"""``python -m datadiet``: the command line (what ``torchrun -m datadiet train ...`` runs on each rank)."""

import os
import sys

from .cli.main import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
    # A rank of several processes: its work is done and written (the runner ends with a barrier). Leave
    # without the interpreter's teardown, which now and then aborts a gloo rank on the CPU after a run
    # ("terminate called without an active exception"; seen in about 1 launch in 10 in our tests, with
    # transformers loaded), and would turn a finished run into a failed torchrun.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
