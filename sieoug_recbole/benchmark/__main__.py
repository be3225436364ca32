"""``python -m sieoug_recbole.benchmark``: see :mod:`sieoug_recbole.benchmark.cli`."""

import sys

from sieoug_recbole.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
