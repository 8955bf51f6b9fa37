"""`python -m alexnet ...`, and so `torchrun --nproc-per-node N -m alexnet train ...`."""

import sys

from alexnet.cli import main

sys.exit(main())
