"""`python -m kbn`: the `kbn` command, for an environment without the console script."""

import sys

from kbn.cli import main

sys.exit(main())
