import sys

from listener.run_cmd import main

sys.exit(main())
