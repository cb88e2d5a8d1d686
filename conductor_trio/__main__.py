"""``python -m conductor_trio start|status|config``."""

import sys

from conductor_trio.cli import main

sys.exit(main())
