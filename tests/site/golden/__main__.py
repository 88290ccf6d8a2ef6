"""`python -m tests.site.golden regenerate`: render the golden site again into tests/site/golden/expected-site/ (see tests/helpers/site_golden.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "helpers"))  # the tests' helpers import each other by name

from site_golden import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
