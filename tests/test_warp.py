"""Warp to the tempo map: beats of audio generated at one tempo land on the host's grid across tempo changes.

The estimator is honest: a stand-in model plays a click on every beat of the tempo its prompt names
(as a model follows its prompt's BPM), the shell warps that audio, and each click's onset is detected in
the placed file (first sample over a quarter of the peak near each grid beat) and compared with the
host's beat positions from `bridge.timeline`. The same run without warp shows what the estimator
catches.
"""

import itertools
import json
import re
from fractions import Fraction

import numpy as np
import pytest

from bridge.results import Generation
from bridge.timeline import Meter, TempoMap
from plugin_shell.shell import PluginShell
from plugin_shell.testhost import Arrangement
from plugin_shell.warp import plan, tempo_changes_within
from sa3_engine.audio import read_audio, write_wav

RATE = 48000
MODEL_RATE = 44100
# 90 -> 140 bpm: a tempo change on every bar (as a DAW ramp is drawn in steps) or on every beat, 4/4
RAMP_BARS = TempoMap.from_lists([(4 * k, 90 + Fraction(50 * k, 7)) for k in range(8)])
RAMP_BEATS = TempoMap.from_lists([(k, 90 + Fraction(50 * k, 31)) for k in range(32)])
SEARCH = round(0.05 * MODEL_RATE)


def clicks(n: int, bpm: float, rate: int, first: float = 0.0) -> np.ndarray:
    """n samples with a short 2 kHz click starting at every beat of `bpm` from `first` seconds."""
    audio = np.zeros((2, n), np.float32)
    t = np.arange(round(0.006 * rate)) / rate
    click = (0.8 * np.sin(2 * np.pi * 2000 * t) * np.exp(-t * 300)).astype(np.float32)
    beat = first
    while beat * rate < n:
        i = round(beat * rate)
        audio[:, i : i + click.size] += click[: n - i]
        beat += 60 / bpm
    return audio


class ClickModel:
    """A stand-in model that plays clicks at the BPM its prompt names."""

    model_id, sample_rate, max_seconds = "clicks", MODEL_RATE, 60.0

    def __init__(self):
        self.prompts = []

    def _bpm(self, prompt):
        self.prompts.append(prompt)
        return int(re.search(r"BPM: (\d+)", prompt).group(1))

    def generate(self, prompt, *, seconds, seed=-1, **_):
        return Generation(clicks(round(seconds * MODEL_RATE), self._bpm(prompt), MODEL_RATE), MODEL_RATE, seed, {})

    def extend(self, audio, *, seconds, prompt, seed=-1, **_):
        new = clicks(round(seconds * MODEL_RATE), self._bpm(prompt), MODEL_RATE)
        return Generation(np.concatenate([audio, new], axis=1), MODEL_RATE, seed, {})


def drift_ms(audio: np.ndarray, beats: list[int], rate: int) -> np.ndarray:
    """Detected onset minus grid position, in ms, for each grid beat (sample index in `audio`)."""
    envelope = np.abs(audio[0])
    threshold = 0.25 * envelope.max()
    found = []
    for beat in beats:
        lo = max(0, beat - SEARCH)
        window = envelope[lo : beat + SEARCH]
        above = np.flatnonzero(window > threshold)
        found.append(lo + above[0] if above.size else lo + 10 * SEARCH)  # no click near the beat: far off
    return (np.array(found) - np.array(beats)) * 1000 / rate


def arrangement(tmp_path, tempo_map):
    host = Arrangement(RATE, tempo_map, tmp_path / "clips")
    host.add_track("t")
    return host


@pytest.mark.parametrize("tempo_map", [RAMP_BARS, RAMP_BEATS], ids=["tempo-per-bar", "tempo-per-beat"])
def test_a_loop_over_a_ramp_lands_on_the_grid_within_5ms(tmp_path, tempo_map):
    host = arrangement(tmp_path, tempo_map)
    clip = PluginShell(host, ClickModel(), template="drum_loop").generate_loop("t", bars=10, start_bar=0)
    audio, _ = read_audio(clip.path)
    grid = [tempo_map.bar_to_sample(Fraction(k, 4), RATE) for k in range(40)]
    assert audio.shape[1] == tempo_map.bar_to_sample(10, RATE)
    drift = drift_ms(audio, grid, RATE)
    assert np.abs(drift).max() <= 5.0, drift
    warp = json.loads(clip.path.with_suffix(".json").read_text())["warp"]
    assert warp["applied"] and warp["segments"][0]["bpm"] == 90 and warp["segments"][-1]["bpm"] == 140


def test_without_warp_the_same_loop_drifts_off_the_grid(tmp_path):
    """What the estimator measures when nothing is warped: the clicks of the mean tempo."""
    host = arrangement(tmp_path, RAMP_BARS)
    clip = PluginShell(host, ClickModel(), template="drum_loop", warp=False).generate_loop("t", bars=10, start_bar=0)
    audio, _ = read_audio(clip.path)
    grid = [RAMP_BARS.bar_to_sample(Fraction(k, 4), RATE) for k in range(40)]
    assert np.abs(drift_ms(audio, grid, RATE)).max() > 100
    assert json.loads(clip.path.with_suffix(".json").read_text())["warp"] == {"applied": False}


def test_an_extension_into_a_ramp_keeps_the_clips_tempo_then_follows_the_grid(tmp_path):
    """The clip ends at 90 bpm; the extension is prompted at 90 and stretched onto the ramp after it."""
    tempo_map = TempoMap.from_lists([(0, 90)] + [(8 + 4 * k, 90 + Fraction(50 * (k + 1), 6)) for k in range(6)])
    host = arrangement(tmp_path, tempo_map)
    end = tempo_map.bar_to_sample(2, RATE)
    source = write_wav(tmp_path / "source.wav", clicks(end, 90, RATE), RATE, bit_depth="float")
    clip = host.add_clip("t", source, start=0)
    host.song_end = tempo_map.bar_to_sample(9, RATE)
    model = ClickModel()
    extension = PluginShell(host, model, template="drum_loop").extend("t", clip)
    assert "BPM: 90," in model.prompts[0]
    audio, _ = read_audio(extension.path)
    assert (extension.start, audio.shape[1]) == (end, host.song_end - end)
    grid = [tempo_map.bar_to_sample(Fraction(k, 4), RATE) - end for k in range(8, 36)]
    drift = drift_ms(audio, grid[1:], RATE)  # the first beat sits on the join with the source
    assert np.abs(drift).max() <= 5.0, drift


def test_the_plan_tiles_the_range_and_puts_tempo_changes_on_host_samples():
    start, end = RAMP_BARS.bar_range_to_samples(Fraction(1, 2), Fraction(19, 2), RATE)
    warp_plan = plan(RAMP_BARS, RATE, start, end, Fraction(115))
    targets = [p.target for p in warp_plan.pieces]
    assert targets[0][0] == 0 and targets[-1][1] == end - start
    assert all(a[1] == b[0] for a, b in itertools.pairwise(targets))
    cuts = {t[0] + start for t in targets}
    assert {RAMP_BARS.bar_to_sample(bar, RATE) for bar in range(1, 8)} <= cuts
    # 9 bars at 115 bpm (start and end are whole samples, so a sample either way)
    assert abs(warp_plan.source_length - Fraction(9 * 4 * 60, 115) * RATE) <= 1
    assert [s["bpm"] for s in warp_plan.sidecar()["segments"]] == [float(t.bpm) for t in RAMP_BARS.tempos]


def test_warp_is_only_needed_where_the_tempo_changes_inside_the_range():
    steady = TempoMap.from_lists([(0, 120), (8, 120), (16, 100)], [(0, 7, 8)])
    assert not tempo_changes_within(steady, RATE, 0, steady.bar_to_sample(Fraction(32, 7), RATE))
    assert tempo_changes_within(steady, RATE, 0, steady.bar_to_sample(5, RATE))
    assert not tempo_changes_within(TempoMap.constant(133, Meter(7, 8)), RATE, 0, 10 * RATE)
