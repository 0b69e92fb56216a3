"""`python -m training.generation ...`: see training/generation/cli.py for the options."""

import sys

from training.generation.cli import main

if __name__ == "__main__":
    sys.exit(main())
