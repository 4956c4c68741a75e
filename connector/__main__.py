"""``python -m connector``: see :mod:`connector.cli`."""

import sys

from connector.cli import main

sys.exit(main())
