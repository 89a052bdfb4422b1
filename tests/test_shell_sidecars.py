"""What the shell says beside each result: bars as the DAW numbers them, and the tempo it assumed."""

import json

import numpy as np
import pytest

from bridge.results import Generation
from bridge.timeline import TempoMap
from plugin_shell.shell import PluginShell
from plugin_shell.testhost import Arrangement


class Sines:
    """A backend of quiet sines: enough for the shell to place, name and describe results."""

    model_id, sample_rate, max_seconds = "sines", 44100, 60.0

    def _made(self, n):
        t = np.arange(n) / 44100
        return Generation(np.stack([0.2 * np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32), 44100, 1, {})

    def generate(self, prompt, *, seconds, **options):
        return self._made(round(seconds * 44100))

    def extend(self, audio, *, seconds, prompt, **options):
        return self._made(audio.shape[1] + round(seconds * 44100))

    def variation(self, audio, *, init_noise_level, prompt, **options):
        return self._made(audio.shape[1])


def sidecar(clip) -> dict:
    return json.loads(clip.path.with_suffix(".json").read_text())


@pytest.fixture
def ramp(tmp_path):
    """4/4 at 90 bpm for two bars, then 140 bpm: the ramp on which beats drifted 0.72 s."""
    host = Arrangement(48000, TempoMap.from_lists([(0, 90), (8, 140)], [(0, 4, 4)]), tmp_path / "clips")
    host.add_track("t")
    return host


def test_a_loop_across_a_tempo_change_is_warped_and_says_so(ramp):
    clip = PluginShell(ramp, Sines()).generate_loop("t", bars=4, start_bar=0)
    meta = sidecar(clip)
    assert meta["tempo_changes"] is True and meta["warped"] is True and meta["warp"]["applied"] is True
    assert (meta["tempo_min_bpm"], meta["tempo_max_bpm"]) == (90, 140)
    assert 90 < meta["tempo_bpm"] < 140  # the mean: 16 quarters in 2 bars at 90 + 2 bars at 140
    assert "tempo_note" not in meta


def test_an_extension_across_a_tempo_change_is_warped_too(ramp, tmp_path):
    first = PluginShell(ramp, Sines()).generate_loop("t", bars=1, start_bar=0)
    ramp.song_end = ramp.bar_to_sample(4)
    meta = sidecar(PluginShell(ramp, Sines()).extend("t", first))
    assert meta["tempo_changes"] is True and meta["warped"] is True and "tempo_note" not in meta


def test_a_variation_across_a_tempo_change_says_it_is_at_the_mean_tempo_and_not_warped(ramp):
    source = PluginShell(ramp, Sines()).generate_loop("t", bars=4, start_bar=0)  # bars 1-4, across bar 3
    meta = sidecar(PluginShell(ramp, Sines()).variation("t", source, init_noise_level=0.5))
    assert meta["tempo_changes"] is True and meta["warped"] is False
    assert "mean tempo" in meta["tempo_note"] and "not warped" in meta["tempo_note"]


def test_a_range_at_one_tempo_has_no_tempo_note(ramp):
    meta = sidecar(PluginShell(ramp, Sines()).generate_loop("t", bars=2, start_bar=2))
    assert meta["tempo_changes"] is False and meta["warped"] is False and "tempo_note" not in meta
    assert meta["tempo_bpm"] == meta["tempo_min_bpm"] == meta["tempo_max_bpm"] == 140


def test_file_names_sidecars_and_printouts_number_bars_the_same_way(ramp, capsys):
    """One convention: bars from 1 as the DAW's ruler, a range from where it starts to where it stops."""
    loop = PluginShell(ramp, Sines()).generate_loop("t", bars=2, start_bar=1)  # the API's offset 1 = bar 2
    meta = sidecar(loop)
    assert (meta["start_bar"], meta["end_bar"], meta["bars"]) == (2, 4, 2)
    assert "_bar2-4_" in loop.path.name


def test_render_prints_where_each_result_lands_in_the_same_bars(tmp_path, capsys):
    from plugin_shell import render

    song = render.load_song(_song(tmp_path))
    arrangement, named = render.arrange(song, tmp_path, tmp_path / "clips")
    render.run_steps(song, arrangement, named, Sines())
    printed = capsys.readouterr().out
    clip = arrangement.track("t").clips[0]
    assert "placed at bar 3 (2.00 s)" in printed and "_bar3-4_" in clip.path.name
    assert sidecar(clip)["start_bar"] == 3


def _song(folder):
    path = folder / "song.toml"
    path.write_text("sample_rate = 48000\n[tempo]\nbpm = 240\n[[tracks]]\nname = 't'\n"
                    "[[steps]]\nop = 'loop'\ntrack = 't'\nbar = 3\nbars = 1\n")
    return path
