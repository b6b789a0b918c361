"""``python -m receiver``: same as the ``bodycam-receiver`` console script."""

import sys

from receiver.cli import main

sys.exit(main())
