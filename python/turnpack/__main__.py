import sys

from turnpack.cli import main

sys.exit(main())
