import sys

from turnpack.train.loop import main

sys.exit(main())
