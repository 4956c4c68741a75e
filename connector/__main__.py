"""``python -m connector``: see :mod:`connector.cli`."""

import sys

from connector.cli import main
from connector.runner import settle_collector

settle_collector()
sys.exit(main())
