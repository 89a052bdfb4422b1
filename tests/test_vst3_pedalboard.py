"""The built SA3.vst3 in pedalboard (a host without a playhead: the plugin clock parameters stand in),
against a real engine process on tiny-random: parameters, bit-exact pass-through, capture -> generate
-> playback, result files and state, and the checks a plugin validator would make."""

import json
import os
import signal
import sys

import numpy as np
import pytest
from pedalboard.io import AudioFile
from vst3_hosting import RATE, load, noise, pulse, set_text, state, wait_for, wait_status

from bridge.spawn import EngineProcess
from bridge.timeline import Meter, TempoMap
from plugin_shell.vst3_host import PluginState

BAR_120 = 2 * RATE  # one 4/4 bar at 120 bpm, in samples

PARAMETERS = {  # pedalboard name: (minimum, maximum)
    "mode": None, "run": None, "cancel": None, "again_with_a_new_seed": None, "capture": None,
    "start_engine": None, "seed": (0, 999999), "bars": (1, 64), "start_bar": (1, 999),
    "variation_amount": (0.01, 1.0), "dry_wet": (0.0, 1.0), "a_b": None, "clock": None,
    "plugin_clock_tempo": (20.0, 300.0), "plugin_clock_meter_numerator": (1, 32),
    "plugin_clock_meter_denominator": None, "plugin_clock_start_bar": (1.0, 1000.0), "status": None,
    "progress": (0.0, 1.0),
}


@pytest.fixture
def no_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("SA3_CONNECTION_FILE", str(tmp_path / "nobody" / "engine.json"))


def clocked(plugin, bars=1, start_bar=1, tempo=120.0):
    """Drive the plugin from its own clock, as a host without a playhead needs."""
    plugin.clock = "Plugin clock"
    plugin.plugin_clock_tempo = tempo
    plugin.plugin_clock_start_bar = 1.0
    plugin.start_bar = start_bar
    plugin.bars = bars
    return plugin


def connected(plugin):
    return wait_for(plugin, lambda s: s.startswith("Connected"), "a connection to the engine")


def test_lists_its_parameters_within_their_ranges(vst3_plugin, no_engine):
    plugin = load(vst3_plugin)
    assert set(PARAMETERS) <= set(plugin.parameters)
    for name, bounds in PARAMETERS.items():
        parameter = plugin.parameters[name]
        if bounds is not None:
            assert (parameter.min_value, parameter.max_value) == pytest.approx(bounds), name
    assert plugin.parameters["mode"].valid_values == ["Generate loop", "Inpaint", "Extend", "Variation"]


def test_idle_plugin_passes_audio_bit_exactly_and_says_no_engine_runs(vst3_plugin, no_engine):
    plugin = load(vst3_plugin)
    audio = noise(1.0)
    assert np.array_equal(plugin(audio, RATE), audio)
    status = wait_for(plugin, lambda s: s.startswith("No engine"), "that no engine runs")
    assert "sa3 serve" in status
    assert np.array_equal(plugin(audio, RATE), audio)


def test_passes_audio_at_any_block_size_and_rate_across_repeated_prepares(vst3_plugin, no_engine):
    plugin = load(vst3_plugin)  # one instance: each new rate or block size releases and prepares it again
    for rate in (22050, 44100, 48000, 96000, 44100):
        for block in (1, 8192):
            audio = noise(0.05 if block == 1 else 0.5, rate=rate)
            for clock in ("Host playhead", "Plugin clock"):
                plugin.clock = clock
                assert np.array_equal(plugin(audio, rate, buffer_size=block), audio), (rate, block, clock)


def test_non_finite_input_never_reaches_the_output(vst3_plugin, no_engine):
    plugin = load(vst3_plugin)
    audio = noise(0.2)
    audio[0, 10], audio[1, 20], audio[0, 30] = np.nan, np.inf, -np.inf
    out = plugin(audio, RATE)
    assert np.isfinite(out).all()
    finite = np.isfinite(audio)
    assert np.array_equal(out[finite], audio[finite])


def test_state_round_trips_parameters_and_text(vst3_plugin, no_engine, tmp_path):
    plugin = clocked(load(vst3_plugin), bars=7, start_bar=3, tempo=97.5)
    plugin.mode, plugin.seed, plugin.dry_wet = "Extend", 1234, 0.25
    set_text(plugin, prompt="warm tape chords", model="tiny-random", results_folder=tmp_path)
    saved = plugin.raw_state

    other = load(vst3_plugin)
    other.raw_state = saved
    before, after = PluginState.from_host_bytes(saved), state(other)
    for name in ("mode", "seed", "bars", "start_bar", "tempo", "dry_wet", "clock"):
        assert after.parameter(name) == before.parameter(name), name
    for name in ("prompt", "model", "results_folder", "template"):
        assert after.text.get(name) == before.text.get(name), name
    assert (other.bars, other.start_bar, other.mode) == (7, 3, "Extend")


def test_missing_result_file_is_reported_and_audio_passes(vst3_plugin, no_engine, tmp_path):
    plugin = load(vst3_plugin)
    plugin.raw_state = state(plugin).set_results([tmp_path / "gone.wav"]).to_host_bytes()
    wait_status(lambda: state(plugin).notice, lambda s: s.startswith("Result file missing"), "the missing file")
    assert str(tmp_path / "gone.wav") in state(plugin).notice
    audio = noise(0.5)
    assert np.array_equal(plugin(audio, RATE), audio)


def test_capture_generate_and_play_back_in_place(vst3_plugin, plugin_engine, tmp_path):
    plugin = clocked(load(vst3_plugin), bars=1, start_bar=2)
    set_text(plugin, prompt="test loop", results_folder=tmp_path)
    connected(plugin)
    audio = noise(5.0)  # past the end of bar 2, where the capture ends

    plugin.capture = True
    assert np.array_equal(plugin(audio, RATE), audio)  # capturing changes nothing
    plugin.capture = False
    wait_for(plugin, lambda s: s.startswith("Captured"), "the capture")

    plugin.mode = "Generate loop"
    status = pulse(plugin, "run", lambda s: s.startswith(("Done", "The", "No")), "the generated loop")
    assert status.startswith("Done"), status
    [wav] = state(plugin).results
    with AudioFile(str(wav)) as f:
        result = f.read(f.frames)
    assert result.shape == (2, BAR_120)  # one bar at 120 bpm, at the host rate
    sidecar = json.loads(wav.with_suffix(".json").read_text())
    assert sidecar["mode"] == "Generate loop" and sidecar["bars"] == 1 and sidecar["start_bar"] == 2
    assert "BPM: 120" in sidecar["prompt"] and "test loop" in sidecar["prompt"]

    out = plugin(audio, RATE)  # bar 2 is the result, sample for sample; the rest is the input
    assert np.array_equal(out[:, BAR_120 : 2 * BAR_120], result)
    assert np.array_equal(out[:, :BAR_120], audio[:, :BAR_120])
    assert np.array_equal(out[:, 2 * BAR_120 :], audio[:, 2 * BAR_120 :])

    plugin.a_b = "A: original"
    assert np.array_equal(plugin(audio, RATE), audio)
    plugin.a_b = "B: generated"
    plugin.dry_wet = 0.0
    assert np.array_equal(plugin(audio, RATE), audio)
    plugin.dry_wet = 1.0

    # Again with a new seed: a second file; the first is left as it was.
    first, before = wav.read_bytes(), status
    status = pulse(plugin, "again_with_a_new_seed", lambda s: s.startswith(("Done", "The")) and s != before,
                   "a second loop")
    assert status.startswith("Done"), status
    assert len(state(plugin).results) == 2 and wav.read_bytes() == first


def test_loop_at_another_host_rate_is_resampled_and_placed_on_the_bar(vst3_plugin, plugin_engine, tmp_path):
    rate = 48000
    plugin = clocked(load(vst3_plugin), bars=1, start_bar=2)
    set_text(plugin, results_folder=tmp_path)
    connected(plugin)
    audio = noise(5.0, rate=rate)
    plugin(audio, rate)  # the plugin learns where bars 2 and 3 start at this rate
    plugin.mode = "Generate loop"
    status = pulse(plugin, "run", lambda s: s.startswith(("Done", "The")), "the loop")
    assert status.startswith("Done"), status
    with AudioFile(str(state(plugin).results[-1])) as f:
        assert f.samplerate == rate
        result = f.read(f.frames)
    bar = 2 * rate
    assert result.shape == (2, bar)
    out = plugin(audio, rate)
    assert np.array_equal(out[:, bar : 2 * bar], result)
    assert np.array_equal(out[:, :bar], audio[:, :bar]) and np.array_equal(out[:, 2 * bar :], audio[:, 2 * bar :])


def test_loop_in_seven_eight_lands_where_bridge_timeline_puts_the_bar(vst3_plugin, plugin_engine, tmp_path):
    plugin = clocked(load(vst3_plugin), bars=1, start_bar=3)
    plugin.plugin_clock_meter_numerator, plugin.plugin_clock_meter_denominator = 7, "8"
    set_text(plugin, results_folder=tmp_path)
    connected(plugin)
    audio = noise(6.0)
    plugin(audio, RATE)
    plugin.mode = "Generate loop"
    status = pulse(plugin, "run", lambda s: s.startswith(("Done", "The")), "the loop")
    assert status.startswith("Done"), status
    start, end = TempoMap.constant(120, Meter(7, 8)).bar_range_to_samples(2, 3, RATE)
    with AudioFile(str(state(plugin).results[-1])) as f:
        result = f.read(f.frames)
    assert result.shape == (2, end - start)
    assert "Time Signature: 7/8" in json.loads(state(plugin).results[-1].with_suffix(".json").read_text())["prompt"]
    out = plugin(audio, RATE)
    assert np.array_equal(out[:, start:end], result)
    assert np.array_equal(out[:, :start], audio[:, :start]) and np.array_equal(out[:, end:], audio[:, end:])


def test_variation_of_the_capture_plays_in_its_place(vst3_plugin, plugin_engine, tmp_path):
    plugin = clocked(load(vst3_plugin), bars=1, start_bar=1)
    set_text(plugin, results_folder=tmp_path)
    connected(plugin)
    audio = noise(3.0)
    plugin.capture = True
    plugin(audio, RATE)
    plugin.capture = False
    wait_for(plugin, lambda s: s.startswith("Captured"), "the capture")
    plugin.mode, plugin.variation_amount = "Variation", 0.5
    status = pulse(plugin, "run", lambda s: s.startswith(("Done", "The")), "the variation")
    assert status.startswith("Done"), status
    with AudioFile(str(state(plugin).results[-1])) as f:
        result = f.read(f.frames)
    assert result.shape == (2, BAR_120)
    assert json.loads(state(plugin).results[-1].with_suffix(".json").read_text())["engine_params"]["mode"] == "variation"
    out = plugin(audio, RATE)
    assert np.array_equal(out[:, :BAR_120], result) and not np.array_equal(result, audio[:, :BAR_120])
    assert np.array_equal(out[:, BAR_120:], audio[:, BAR_120:])


def test_cancel_stops_the_running_job(vst3_plugin, plugin_engine, tmp_path):
    plugin = clocked(load(vst3_plugin), bars=64, tempo=45.0)  # about 6 minutes of audio: a long job
    set_text(plugin, results_folder=tmp_path)
    connected(plugin)
    plugin.mode = "Generate loop"
    pulse(plugin, "run", lambda s: s.startswith("Generate loop"), "the job under way")
    status = pulse(plugin, "cancel", lambda s: s in ("Cancelled", ) or s.startswith(("Done", "The")), "the end")
    assert status == "Cancelled"
    assert not list(tmp_path.iterdir())
    audio = noise(0.5)
    assert np.array_equal(plugin(audio, RATE), audio)


def test_result_too_large_to_receive_is_refused_clearly(vst3_plugin, plugin_engine, tmp_path):
    plugin = clocked(load(vst3_plugin), bars=64, tempo=20.0)  # 64 slow bars: ~13 minutes of audio
    set_text(plugin, results_folder=tmp_path)
    connected(plugin)
    plugin.mode = "Generate loop"
    status = pulse(plugin, "run", lambda s: s.startswith(("Done", "The")), "the refusal")
    assert status.startswith("The result is too large"), status
    audio = noise(0.5)
    assert np.array_equal(plugin(audio, RATE), audio)
    assert not list(tmp_path.iterdir())


def test_wrong_key_is_reported_and_audio_passes(vst3_plugin, plugin_engine, tmp_path, monkeypatch):
    info = json.loads(plugin_engine.connection_file.read_text())
    info["key"] = "f" * 64
    forged = tmp_path / "engine.json"
    forged.write_text(json.dumps(info))
    forged.chmod(0o600)
    monkeypatch.setenv("SA3_CONNECTION_FILE", str(forged))
    plugin = load(vst3_plugin)
    status = wait_for(plugin, lambda s: "verification" in s, "the failed verification")
    assert "key" in status
    audio = noise(0.5)
    assert np.array_equal(plugin(audio, RATE), audio)


def test_engine_killed_mid_job_is_reported_then_reconnected(vst3_plugin, tmp_path, monkeypatch):
    folder = tmp_path / "engine"
    folder.mkdir()
    engine = EngineProcess(folder).start()
    monkeypatch.setenv("SA3_CONNECTION_FILE", str(engine.connection_file))
    try:
        plugin = clocked(load(vst3_plugin), bars=64, tempo=60.0)  # a long job: about 4 minutes of audio
        set_text(plugin, results_folder=tmp_path / "results")
        connected(plugin)
        plugin.mode = "Generate loop"
        pulse(plugin, "run", lambda s: s.startswith("Generate loop"), "the job under way")
        engine.signal(signal.SIGKILL)
        engine.wait()
        status = wait_for(plugin, lambda s: "during the job" in s, "the lost job")
        assert "reconnects" in status
        audio = noise(0.5)
        assert np.array_equal(plugin(audio, RATE), audio)

        engine.start()  # the same connection file: the plugin finds it again by itself
        connected(plugin)
    finally:
        engine.stop()


def test_start_engine_button_starts_a_shared_engine(vst3_plugin, tmp_path, monkeypatch):
    connection_file = tmp_path / "runtime" / "engine.json"
    monkeypatch.setenv("SA3_CONNECTION_FILE", str(connection_file))
    plugin = load(vst3_plugin)
    set_text(plugin, model="tiny-random", python=sys.executable)  # the Python this suite runs on
    wait_for(plugin, lambda s: s.startswith("No engine"), "that no engine runs")
    try:
        pulse(plugin, "start_engine", lambda s: s.startswith("Connected"), "the engine it started")
        second = load(vst3_plugin)  # another instance shares it
        connected(second)
    finally:
        if connection_file.exists():
            os.kill(json.loads(connection_file.read_text())["pid"], signal.SIGTERM)
