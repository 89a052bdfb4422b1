"""The built SA3.vst3 hosted by DawDreamer, which gives plugins a moving playhead with tempo
automation, against a real engine on tiny-random: results land on exactly the host samples
bridge.timeline computes for the song's tempo map (with a tempo change), an inpaint leaves everything
outside its range as it was, and an extend continues the capture without a gap."""

import time

import numpy as np
import pytest
from pedalboard.io import AudioFile
from vst3_hosting import RATE, TICK_S, noise, wait_status

from bridge.timeline import TempoMap
from plugin_shell.vst3_host import PluginState

daw = pytest.importorskip("dawdreamer")

BLOCK = 512
PPQN = 960
CHANGE_QUARTER = 8  # 120 bpm for two 4/4 bars, then 90 bpm
SECONDS = 10.0
STEP_MINUTES = BLOCK / (RATE * 60)


def host_tempo_map() -> TempoMap:
    """The song's tempo map as DawDreamer plays it: it takes the tempo at each block's start for the
    whole block, so the change happens at the first block starting at or after quarter 8."""
    ppq, block = 0.0, 0
    while int(PPQN * ppq) < CHANGE_QUARTER * PPQN:
        ppq += STEP_MINUTES * 120.0
        block += 1
    change = TempoMap.constant(120).seconds_to_quarters(block * BLOCK / RATE)
    return TempoMap.from_lists([(0, 120), (change, 90)])


class Session:
    """A DawDreamer render engine with the plugin after a player of `audio`."""

    def __init__(self, plugin_path, audio, results_folder, tmp_path):
        self.engine = daw.RenderEngine(RATE, BLOCK)
        tempo = np.array([120.0] * (CHANGE_QUARTER * PPQN) + [90.0], dtype=np.float32)
        self.engine.set_bpm(tempo, ppqn=PPQN)
        self.player = self.engine.make_playback_processor("player", audio)
        self.plugin = self.engine.make_plugin_processor("sa3", str(plugin_path))
        self.engine.load_graph([(self.player, []), (self.plugin, ["player"])])
        self.index = {p["name"]: p["index"] for p in self.plugin.get_parameters_description()}
        self.state_file = tmp_path / "sa3.state"
        state = self.state().set_text(prompt="test", results_folder=results_folder)
        self.state_file.write_bytes(state.to_host_bytes())
        self.plugin.load_state(str(self.state_file))

    def set(self, name: str, normalised: float) -> None:
        self.plugin.set_parameter(self.index[name], normalised)

    def set_range(self, start_bar: int, bars: int) -> None:
        self.set("Start bar", (start_bar - 1) / 998)
        self.set("Bars", (bars - 1) / 63)

    def render(self, seconds: float = SECONDS) -> np.ndarray:
        self.engine.render(seconds)
        return self.engine.get_audio()

    def state(self) -> PluginState:
        self.plugin.save_state(str(self.state_file))
        return PluginState.from_host_bytes(self.state_file.read_bytes())

    def wait_for(self, prefix: str, what: str) -> str:
        """The status starting with `prefix`, or an error ("The ...") instead."""
        return wait_status(lambda: self.state().status, lambda s: s.startswith((prefix, "The")), what)

    def capture(self) -> None:
        self.set("Capture", 1.0)
        self.render()
        self.set("Capture", 0.0)
        assert self.wait_for("Captured", "the capture").startswith("Captured")

    def run(self, mode: int) -> np.ndarray:
        """Runs a workflow (parameters reach a DawDreamer plugin while it renders) and returns the
        result file's audio."""
        self.set("Mode", mode / 3)
        self.set("Run", 1.0)
        self.render(0.05)
        status = self.wait_for("Done", "the result")
        self.set("Run", 0.0)
        self.render(0.05)
        time.sleep(TICK_S)
        assert status.startswith("Done"), status
        with AudioFile(str(self.state().results[-1])) as f:
            return f.read(f.frames)


@pytest.fixture
def session(vst3_plugin, plugin_engine, tmp_path):
    audio = noise(SECONDS + 1)
    made = Session(vst3_plugin, audio, tmp_path / "results", tmp_path)
    made.wait_for("Connected", "a connection to the engine")
    return made, audio


def test_loop_at_a_bar_plays_at_the_sample_bridge_timeline_computes(session):
    s, audio = session
    s.render()  # the song plays once: the plugin learns where its bars fall
    s.set_range(start_bar=4, bars=1)  # 0-based bar 3, after the tempo change
    result = s.run(mode=0)
    start, end = host_tempo_map().bar_range_to_samples(3, 4, RATE)
    assert result.shape == (2, end - start)  # one bar at 90 bpm
    out = s.render()
    n = out.shape[1]
    assert np.array_equal(out[:, start:end], result)
    assert np.array_equal(out[:, :start], audio[:, :start])
    assert np.array_equal(out[:, end:], audio[:, end:n])


def test_inpaint_leaves_the_output_unchanged_outside_the_range(session):
    s, audio = session
    s.set_range(start_bar=1, bars=4)
    s.capture()
    s.set_range(start_bar=3, bars=1)  # bar 3 of the four captured, across the tempo change
    result = s.run(mode=1)
    tempo = host_tempo_map()
    capture_end = tempo.bar_to_sample(4, RATE)
    start, end = tempo.bar_range_to_samples(2, 3, RATE)
    assert result.shape == (2, capture_end)
    out = s.render()
    n = out.shape[1]
    outside = np.ones(n, dtype=bool)
    outside[start:end] = False
    assert np.array_equal(out[:, outside], audio[:, :n][:, outside])
    assert not np.array_equal(out[:, start:end], audio[:, start:end])


def test_extend_continues_the_capture_contiguously(session):
    s, audio = session
    s.set_range(start_bar=1, bars=2)
    s.capture()
    s.set_range(start_bar=1, bars=1)  # one more bar
    result = s.run(mode=2)
    tempo = host_tempo_map()
    capture_end, extended_end = tempo.bar_to_sample(2, RATE), tempo.bar_to_sample(3, RATE)
    assert result.shape == (2, extended_end)
    assert np.array_equal(result[:, :capture_end], audio[:, :capture_end])  # the capture, as it was
    out = s.render()
    assert np.array_equal(out[:, :extended_end], result)  # the continuation follows without a gap
    assert not np.array_equal(out[:, capture_end:extended_end], audio[:, capture_end:extended_end])
    assert np.array_equal(out[:, extended_end:], audio[:, extended_end : out.shape[1]])
