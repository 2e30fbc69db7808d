"""`python -m budget_planner`: the same as the `budget-planner` console script."""

import sys

from budget_planner.cli import main

if __name__ == "__main__":
    sys.exit(main())
