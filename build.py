"""Build an atlas: `python build.py` builds the demo; `python build.py my_atlas.toml` builds yours."""

import sys

from atlas.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "build":
        args = ["build", *args]
    sys.exit(main(args))
