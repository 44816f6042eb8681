"""``python -m bench``: the same as ``flashtx bench``."""

import sys

from flashtx.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
