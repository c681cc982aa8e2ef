import sys

from psipo.cli import main

sys.exit(main())
