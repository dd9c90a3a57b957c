"""pytest-trio runs the tests; the app's module is imported from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
