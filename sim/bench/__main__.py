"""``python -m sim.bench``: every benchmark, as `vtx bench` (sim.bench.command)."""

import sys

from sim.bench.command import main

sys.exit(main())
