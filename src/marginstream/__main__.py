import sys

from marginstream.cli import main

sys.exit(main())
