"""The offline pedalboard host: clip placement, resampling on read, takes, effects and the mixdown."""

import os
from fractions import Fraction

import numpy as np
import pytest
from pedalboard import Gain, Reverb

from bridge.timeline import Meter, TempoMap
from plugin_shell.host import Clip, Selection
from plugin_shell.testhost import Arrangement
from sa3_engine.audio import read_audio, write_wav


def impulse_file(path, rate, length=1000, at=0, value=0.5, channels=2):
    audio = np.zeros((channels, length), dtype=np.float32)
    audio[:, at] = value
    return write_wav(path, audio, rate, bit_depth="float")


@pytest.fixture
def waltz(tmp_path):
    """48 kHz, 3/4 at 90 bpm then 150 bpm from bar 2 (0-based)."""
    tempo = TempoMap.from_lists([(0, 90), (6, 150)], [(0, 3, 4)])
    return Arrangement(48000, tempo, tmp_path / "clips")


def test_clips_land_on_exact_samples_by_bar_or_sample(tmp_path, waltz):
    waltz.add_track("a")
    by_bar = waltz.add_clip("a", impulse_file(tmp_path / "x.wav", 48000), bar=3)
    by_sample = waltz.add_clip("a", impulse_file(tmp_path / "y.wav", 48000, at=10), start=12345)
    # bar 3 (0-based) = 2 bars of 3/4 at 90 (4 s) + 1 bar at 150 (1.2 s)
    assert by_bar.start == round(5.2 * 48000)
    assert by_sample.start == 12345
    waltz.song_end = by_bar.start + 2000
    mix = waltz.mix()
    assert mix.shape == (2, waltz.song_end)
    assert np.flatnonzero(mix[0]).tolist() == [12355, by_bar.start]
    assert mix[:, by_bar.start].tolist() == [0.5, 0.5]


def test_read_clip_resamples_to_the_host_rate_and_makes_stereo(tmp_path, waltz):
    waltz.add_track("a")
    t = np.arange(44100) / 44100
    write_wav(tmp_path / "mono.wav", np.sin(2 * np.pi * 441 * t)[None].astype(np.float32), 44100, "float")
    clip = waltz.add_clip("a", tmp_path / "mono.wav", start=0)
    audio = waltz.read_clip(clip)
    assert audio.shape == (2, 48000) and audio.dtype == np.float32
    assert np.array_equal(audio[0], audio[1])
    reference = np.sin(2 * np.pi * 441 * np.arange(48000) / 48000)
    # pedalboard's resampler lands a fraction of a sample late (7 us here): that is the tolerance
    assert np.abs(audio[0, 1000:-1000] - reference[1000:-1000]).max() < 0.03


def test_gain_fades_mute_and_effects(tmp_path):
    host = Arrangement(44100, TempoMap.constant(120), tmp_path, master=[Gain(gain_db=-6.0)])
    host.add_track("a", effects=[Gain(gain_db=6.0)], gain_db=-6.0)
    write_wav(tmp_path / "dc.wav", np.full((2, 100), 0.5, np.float32), 44100, "float")
    host.add_clip("a", tmp_path / "dc.wav", start=0, gain_db=-20.0, fade_in=10, fade_out=20)
    muted = host.add_clip("a", tmp_path / "dc.wav", start=0)
    muted.muted = True
    track = host.render_track("a")
    # -20 dB clip gain, +6 dB effect, -6 dB track gain; linear fades at both ends
    assert track[0, 50] == pytest.approx(0.05, rel=1e-3)
    assert track[0, 0] == pytest.approx(0.05 * 0.05, rel=1e-3)
    assert track[0, 99] == pytest.approx(0.05 * 0.025, rel=1e-3)
    assert np.all(np.diff(track[0, :10]) > 0) and np.all(np.diff(track[0, 80:]) < 0)
    assert host.mix()[0, 50] == pytest.approx(0.05 * 10 ** (-6 / 20), rel=1e-3)
    assert host.song_end == 100


def test_render_writes_the_mixdown_at_the_host_rate(tmp_path):
    host = Arrangement(96000, TempoMap.constant(100, Meter(7, 8)), tmp_path / "clips", master=[Reverb()])
    host.add_track("a")
    host.add_clip("a", impulse_file(tmp_path / "x.wav", 44100, length=441), bar=1)
    host.song_end = host.bar_to_sample(2)
    out = host.render(tmp_path / "mix.wav", bit_depth="24")
    audio, rate = read_audio(out)
    assert rate == 96000 and audio.shape == (2, host.song_end)
    assert np.abs(audio[:, : host.bar_to_sample(1)]).max() == 0  # nothing before the clip, despite the reverb
    assert np.abs(audio).max() > 0
    assert sorted(os.listdir(tmp_path)) == ["mix.wav", "x.wav"]  # no temporary file left behind


def test_takes_mute_the_source_and_keep_it(tmp_path, waltz):
    waltz.add_track("a")
    source = waltz.add_clip("a", impulse_file(tmp_path / "x.wav", 48000), start=0)
    take = Clip(impulse_file(tmp_path / "y.wav", 48000, at=5), 0)
    waltz.place_clip("a", take, take_of=source)
    assert waltz.track("a").clips == [source, take] and source.muted and not take.muted
    assert np.flatnonzero(waltz.mix()[0]).tolist() == [5]
    with pytest.raises(ValueError, match="take_of"):
        waltz.place_clip("a", Clip(tmp_path / "y.wav", 0), take_of=Clip(tmp_path / "x.wav", 0))


def test_selection_by_bars_and_bad_input(tmp_path, waltz):
    selection = waltz.select_bars(Fraction(1, 3), 3)
    assert (selection.start, selection.end) == waltz.tempo_map.bar_range_to_samples(Fraction(1, 3), 3, 48000)
    assert selection.bars == (Fraction(1, 3), 3) and waltz.selection == selection  # exact, not read back
    waltz.add_track("a")
    with pytest.raises(ValueError, match="track"):
        waltz.add_track("a")
    with pytest.raises(ValueError, match="track: no track named 'b'"):
        waltz.track("b")
    with pytest.raises(ValueError, match="clip position"):
        waltz.add_clip("a", impulse_file(tmp_path / "x.wav", 48000), start=0, bar=1)
    with pytest.raises(ValueError, match="clip path"):
        waltz.add_clip("a", tmp_path / "missing.wav", start=0)
    with pytest.raises(ValueError, match="clip start"):
        Clip(tmp_path / "x.wav", -1)
    with pytest.raises(ValueError, match="selection"):
        Selection(10, 10)
    with pytest.raises(ValueError, match="selection bars"):
        Selection(10, 20, bars=(Fraction(2), Fraction(1)))
    with pytest.raises(ValueError, match="sample_rate"):
        Arrangement(44100.0, TempoMap.constant(120), tmp_path)


def test_clip_audio_is_read_once_per_file_version(tmp_path, waltz, monkeypatch):
    from plugin_shell import testhost

    reads = []
    monkeypatch.setattr(testhost, "read_audio", lambda path: reads.append(path) or read_audio(path))
    waltz.add_track("a")
    path = impulse_file(tmp_path / "x.wav", 44100)
    clip = waltz.add_clip("a", path, start=0)
    twin = waltz.add_clip("a", path, start=5000)  # a second clip of the same file shares it
    for _ in range(3):
        assert waltz.song_end == 5000 + 1088
        waltz.mix()
    assert reads == [path]
    with pytest.raises(ValueError, match="read-only"):
        waltz.read_clip(clip)[0, 0] = 1.0  # callers cannot change what others will read
    impulse_file(path, 44100, length=2000)  # the file changes: read again
    assert waltz.clip_length(twin) == 2177 and reads == [path, path]
    path.unlink()
    with pytest.raises(FileNotFoundError, match="clip path: no such file"):
        waltz.read_clip(clip)


def test_placement_rules_of_the_daw_presets(tmp_path, waltz):
    waltz.add_track("a", gain_db=-3.0)
    waltz.add_track("b")
    source = waltz.add_clip("a", impulse_file(tmp_path / "x.wav", 48000), start=100)
    take = waltz.place_clip("a", Clip(impulse_file(tmp_path / "y.wav", 48000), 100), take_of=source)
    assert source.muted and waltz.track("a").clips == [source, take]  # new_take_lane, the default

    source.muted = False
    below = waltz.place_clip("a", Clip(tmp_path / "y.wav", 100), take_of=source, placement="new_track_below")
    again = waltz.place_clip("a", Clip(tmp_path / "y.wav", 0), placement="new_track_below")
    assert list(waltz.tracks) == ["a", "a SA3 2", "a SA3", "b"]  # each right below its track, newest first
    assert waltz.track("a SA3").clips == [below] and waltz.track("a SA3 2").clips == [again]
    assert source.muted and below.start == 100

    source.muted = False
    after = waltz.place_clip("a", Clip(tmp_path / "y.wav", 100), take_of=source, placement="same_track_after")
    assert after.start == 100 + 1000 and not source.muted and waltz.track("a").clips[-1] is after
    with pytest.raises(ValueError, match="placement: expected"):
        waltz.place_clip("a", Clip(tmp_path / "y.wav", 0), placement="elsewhere")
