# certbridge: pytest setup for the pulse's Python (plugins/module_utils) and the module contract.
"""Puts plugins/module_utils on sys.path, so tests import certbridge_pulse as the action does."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
