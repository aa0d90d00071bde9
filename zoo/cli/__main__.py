"""``python -m zoo.cli``: the ``rnn-zoo`` command without its console script."""

import sys

from zoo.cli import main

sys.exit(main())
