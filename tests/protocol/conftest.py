import sys
from pathlib import Path

# Let tests import their helpers as ``tests.protocol.*`` however pytest was started.
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
