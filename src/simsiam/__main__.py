import sys

from simsiam.cli import main

sys.exit(main())
