"""`python -m listener` runs the daemon, as `order-sync run` does (part of the public contract). The one
import from the layer above, declared as such in the import-linter contract."""

import sys

from daemon.run_cmd import main

sys.exit(main())
