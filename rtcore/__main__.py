import sys

from rtcore.cli import main

sys.exit(main())
