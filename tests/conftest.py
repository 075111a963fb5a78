import sys
from pathlib import Path

# bench/ is not a package; tests import its calibration module directly. tests/ holds shared helpers
# (tokenizer_fixture) that test modules in every sub-folder import.
_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "bench"))
sys.path.insert(0, str(_ROOT / "tests"))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_config(tmp_path_factory, monkeypatch):
    """No test reads the developer's ~/.config/ftplan/prices.toml or job store."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("FTPLAN_HOME", str(tmp_path_factory.mktemp("ftplan-home")))


@pytest.fixture(autouse=True)
def _no_modal_token(monkeypatch):
    """With a Modal token set, the SDK tries the network for a minute before failing: never set one."""
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
