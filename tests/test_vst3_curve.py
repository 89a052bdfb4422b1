"""The built SA3.vst3 (in pedalboard) reaching an engine served over CurveZMQ, as on another machine: a real
engine process with ``--curve`` on 127.0.0.1 tcp, the "engine machine" and the "laptop" simulated by
separate key folders (as tests/test_curve.py). The plugin finds the engine through the connection file
`sa3 engine pair` makes and its client key in ``$SA3_KEYS_DIR``; an allowed plugin generates a loop
with audio travelling as buffers, and says which engine (endpoint, remote, device) it uses; a plugin
whose key the engine does not admit says at once that it was refused, and passes audio untouched."""

import json
from dataclasses import replace

import numpy as np
import pytest
from pedalboard.io import AudioFile
from vst3_hosting import RATE, load, noise, pulse, set_text, state, wait_for

from bridge import connection, curve
from bridge.spawn import EngineProcess
from sa3_engine.engine import security

BAR_120 = 2 * RATE  # one 4/4 bar at 120 bpm, in samples


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    root = tmp_path_factory.mktemp("vst3-curve")
    with EngineProcess(root, "--transport", "tcp", "--curve", "--port", "0", "--keys-dir", str(root / "engine-machine")) as engine:
        yield {"root": root, "engine": engine}


def laptop(machines, monkeypatch, name: str, allowed: bool):
    """A client machine: its own key folder and keypair (allow-listed by `sa3 engine pair` or not), and the
    connection file a pairing writes (endpoint, engine key, its public key; the secret stays in the folder)."""
    root = machines["root"]
    keys = root / name
    pair = curve.client_keypair(keys)
    if allowed:
        info = security.pair(name, pair.public, machines["engine"].connection_file, keys_dir=root / "engine-machine")
    else:  # the engine's endpoints and key, for a client key it never admitted
        info = replace(connection.read(machines["engine"].connection_file), curve_publickey=pair.public,
                       curve_secretkey=None, remote=True)
    path = connection.write(info, root / f"{name}.json")
    monkeypatch.setenv("SA3_CONNECTION_FILE", str(path))
    monkeypatch.setenv("SA3_KEYS_DIR", str(keys))
    return json.loads(path.read_text())


def test_an_allowed_plugin_generates_through_curve_and_shows_its_remote_engine(vst3_plugin, machines, monkeypatch, tmp_path):
    file = laptop(machines, monkeypatch, "laptop", allowed=True)
    assert file["remote"] is True and "curve_secretkey" not in file  # the secret is in the laptop's key folder
    plugin = load(vst3_plugin)
    plugin.clock, plugin.plugin_clock_tempo, plugin.start_bar, plugin.bars = "Plugin clock", 120.0, 2, 1
    set_text(plugin, prompt="remote loop", results_folder=tmp_path)
    status = wait_for(plugin, lambda s: s.startswith(("Connected", "The")), "a connection to the remote engine")
    assert status == f"Connected to the remote engine at {file['request_endpoint']}", status
    assert state(plugin).engine == f"{file['request_endpoint']} (remote, CURVE), device cpu"

    audio = noise(5.0)
    assert np.array_equal(plugin(audio, RATE), audio)  # the clock learns where bar 2 falls
    plugin.mode = "Generate loop"
    status = pulse(plugin, "run", lambda s: s.startswith(("Done", "The", "No")), "the generated loop")
    assert status.startswith("Done"), status
    [wav] = state(plugin).results
    assert wav.parent == tmp_path  # written on the plugin's side: the engine was sent no path
    with AudioFile(str(wav)) as f:
        result = f.read(f.frames)
    assert result.shape == (2, BAR_120) and np.isfinite(result).all()
    out = plugin(audio, RATE)
    assert np.array_equal(out[:, BAR_120 : 2 * BAR_120], result)


def test_a_plugin_with_an_unknown_key_is_refused_clearly_and_passes_audio(vst3_plugin, machines, monkeypatch):
    file = laptop(machines, monkeypatch, "stranger", allowed=False)
    plugin = load(vst3_plugin)
    status = wait_for(plugin, lambda s: "refused" in s or s.startswith("Connected"), "the engine's answer to its key")
    assert status.startswith(f"The engine at {file['request_endpoint']} refused this plugin"), status
    assert file["curve_publickey"] in status and "allow-list" in status
    assert state(plugin).engine == f"{file['request_endpoint']} (remote, CURVE), not connected"
    audio = noise(1.0)
    assert np.array_equal(plugin(audio, RATE), audio)
