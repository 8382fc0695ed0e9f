"""``python -m ambcore.bench memory ...``: the peak-memory worker of ``ambcore.bench.training``."""

import sys

from ambcore.bench.training import _worker

sys.exit(_worker(sys.argv[1:]))
