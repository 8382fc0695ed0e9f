import sys

from ambcore.cli import main

sys.exit(main())
