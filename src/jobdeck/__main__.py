"""``python -m jobdeck``: the ``jobdeck`` command."""

import sys

from jobdeck.cli import main

if __name__ == "__main__":
    sys.exit(main())
