import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "src"))

from pzpipe.run.config import load_config  # noqa: E402


@pytest.fixture
def repo():
    return REPO


@pytest.fixture
def cfg():
    return load_config(REPO / "config" / "config.yaml")
