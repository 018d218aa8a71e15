"""``python -m lightrec MODE [CONFIG] [key=value ...]``: see :mod:`lightrec.cli`."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
