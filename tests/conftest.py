import sys
from pathlib import Path

# bench/ is not a package; tests import its calibration module directly.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
