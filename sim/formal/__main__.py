"""``python -m sim.formal``: the same as `vtx formal`."""

import sys

from sim.formal import main

sys.exit(main())
