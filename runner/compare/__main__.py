"""``python -m runner.compare``: see :mod:`runner.compare.cli`."""

import sys

from runner.compare.cli import main

sys.exit(main())
