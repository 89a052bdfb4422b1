import os
from pathlib import Path

import pytest
import torch

# Two cores are shared by the whole suite; more threads only add contention.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.skip(f"official parity vectors not found at {PARITY_DIR}")
    return PARITY_DIR


# --- the native VST3 plugin (plugin_shell/vst3), built by scripts/test -------------------------------


def _built(path: Path, what: str) -> Path:
    """A built artefact; when missing, a failure in CI (CI=true) and a skip elsewhere, both saying how
    to build it."""
    if not path.exists():
        message = (f"{what} is not built ({path} is missing): run scripts/test, or "
                   "cmake -S plugin_shell/vst3 -B build/vst3 -DCMAKE_BUILD_TYPE=Release && cmake --build build/vst3 -j2")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def vst3_plugin() -> Path:
    from plugin_shell.vst3_host import plugin_path

    return _built(plugin_path(), "The SA3 VST3 plugin")


@pytest.fixture(scope="session")
def protocol_tool() -> Path:
    from plugin_shell.vst3_host import protocol_tool_path

    return _built(protocol_tool_path(), "sa3_protocol_tool")


@pytest.fixture(scope="module")
def plugin_engine(tmp_path_factory):
    """A real engine on tiny-random whose connection file the plugin finds through SA3_CONNECTION_FILE
    (the plugin runs inside this process and reads the variable when it looks for an engine)."""
    from bridge.spawn import EngineProcess

    with EngineProcess(tmp_path_factory.mktemp("engine")) as process:
        previous = os.environ.get("SA3_CONNECTION_FILE")
        os.environ["SA3_CONNECTION_FILE"] = str(process.connection_file)
        try:
            yield process
        finally:
            if previous is None:
                os.environ.pop("SA3_CONNECTION_FILE", None)
            else:
                os.environ["SA3_CONNECTION_FILE"] = previous
