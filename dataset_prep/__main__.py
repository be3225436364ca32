"""``python -m dataset_prep``: see :mod:`dataset_prep.cli`."""

import sys

from dataset_prep.cli import main

sys.exit(main())
