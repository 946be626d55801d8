import sys

from qoe.cli import main

sys.exit(main())
