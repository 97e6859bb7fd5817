"""``python -m sim.waves``: the same as `vtx waves`."""

import sys

from sim.waves import main

sys.exit(main())
