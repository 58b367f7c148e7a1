"""``python -m attnviz``: the command line (also under ``torchrun -m attnviz``)."""

import sys

from .cli.main import main

sys.exit(main())
