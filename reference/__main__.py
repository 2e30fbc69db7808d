"""`python -m reference`: the same as the `reference-pipeline` console script."""

import sys

from reference.cli import main

if __name__ == "__main__":
    sys.exit(main())
