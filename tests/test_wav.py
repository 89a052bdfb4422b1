"""WAV files: integer samples survive a read and a write exactly; a truncated file is refused.

The files under test are made and checked with the standard library's ``wave`` module, an oracle
independent of the code under test.
"""

import wave

import numpy as np
import pytest

from sa3_engine import audio as A


def write_pcm(path, ints: np.ndarray, rate: int, width: int) -> None:
    """(channels, samples) integers as a PCM WAV of `width` bytes per sample, via the stdlib."""
    frames = np.ascontiguousarray(ints.T, dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :width]
    with wave.open(str(path), "wb") as f:
        f.setnchannels(ints.shape[0])
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(frames.tobytes())


def read_pcm(path) -> tuple[np.ndarray, int, int]:
    """(integers (channels, samples), rate, bytes per sample) of a PCM WAV, via the stdlib."""
    with wave.open(str(path), "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = np.frombuffer(f.readframes(f.getnframes()), np.uint8).reshape(-1, width)
    padded = np.zeros((raw.shape[0], 4), np.uint8)
    padded[:, 4 - width :] = raw  # the sample in the top bytes of an int32, then an arithmetic shift back
    ints = padded.view("<i4")[:, 0] >> (8 * (4 - width))
    return ints.reshape(-1, channels).T, rate, width


def random_ints(bits: int, shape=(2, 20000), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), shape).astype(np.int32)


@pytest.mark.parametrize("bits, name", [(24, "24"), (16, "16")])
def test_pcm_read_and_written_back_keeps_every_integer_sample(tmp_path, bits, name):
    ints = random_ints(bits)
    ints[:, :4] = [[-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, 0, -1]] * 2  # both full-scale extremes
    write_pcm(tmp_path / "in.wav", ints, 48000, bits // 8)
    audio, rate = A.read_audio(tmp_path / "in.wav")
    assert rate == 48000 and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, ints / 2.0 ** (bits - 1))  # an exact power-of-two scale
    A.write_wav(tmp_path / "out.wav", audio, rate, name)
    back, back_rate, width = read_pcm(tmp_path / "out.wav")
    assert (back_rate, width) == (48000, bits // 8)
    assert np.count_nonzero(back != ints) == 0


def test_float_wav_round_trips_every_bit_including_overs(tmp_path):
    x = (np.random.default_rng(2).standard_normal((3, 5000)) * 0.7).astype(np.float32)
    x[0, :3] = [1.5, -2.25, np.float32(1e-30)]
    A.write_wav(tmp_path / "f.wav", x, 44100, "float")
    y, rate = A.read_audio(tmp_path / "f.wav")
    assert rate == 44100 and y.dtype == np.float32 and np.array_equal(y.view(np.int32), x.view(np.int32))


def test_pcm_written_from_floats_rounds_to_nearest_and_clips_at_full_scale(tmp_path):
    x = np.array([[0.5 / 2**23, 1.5 / 2**23, -0.6 / 2**23, 1.0, -1.0, 3.0, -3.0]], np.float32)
    A.write_wav(tmp_path / "a.wav", x, 44100, "24")
    ints, _, _ = read_pcm(tmp_path / "a.wav")
    assert ints.tolist() == [[0, 2, -1, 2**23 - 1, -(2**23), 2**23 - 1, -(2**23)]]


def test_a_truncated_wav_is_refused_naming_the_file_and_both_lengths(tmp_path):
    path = tmp_path / "cut.wav"
    write_pcm(path, random_ints(24, (2, 1000)), 48000, 3)
    path.write_bytes(path.read_bytes()[:-600])  # the header still says 1000 frames; 900 remain
    with pytest.raises(ValueError) as err:
        A.read_audio(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message and "1000 frames" in message and "900" in message


def test_a_file_that_is_not_a_wav_is_a_clear_error(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00JUNKjunkjunkjunk")
    with pytest.raises(ValueError, match="not a RIFF/WAVE file"):
        A.read_audio(path)


def test_non_finite_audio_is_never_written(tmp_path):
    x = np.zeros((2, 100), np.float32)
    x[1, 50] = np.nan
    for bit_depth in ("24", "float"):
        with pytest.raises(RuntimeError, match="NaN or infinite"):
            A.write_wav(tmp_path / "nan.wav", x, 44100, bit_depth)
    x[1, 50] = np.inf
    with pytest.raises(RuntimeError, match="1 of 200 samples"):
        A.write_wav(tmp_path / "inf.wav", x, 44100, "float")
    assert list(tmp_path.iterdir()) == []


class NoiseBackend:
    """A generation backend whose every result is loud noise, so any kept sample that changes shows."""

    model_id, sample_rate, max_seconds = "noise", 44100, 30.0

    def inpaint(self, audio, *, start, end, prompt, **options):
        from bridge.results import Generation

        noise = np.random.default_rng(1).uniform(-0.5, 0.5, audio.shape).astype(np.float32)
        return Generation(noise, 44100, 1, {})


@pytest.mark.parametrize("rate", [44100, 48000])
def test_a_24_bit_inpaint_take_holds_the_source_integers_outside_the_selection(tmp_path, rate):
    """REAPER, Ableton and Logic presets write 24-bit takes: outside the selection a take must be the
    source's own integer samples, whatever the host rate."""
    from bridge.timeline import TempoMap
    from plugin_shell.host import Selection
    from plugin_shell.shell import PluginShell
    from plugin_shell.testhost import Arrangement

    ints = random_ints(24, (2, 2 * rate), seed=3) // 4  # a source recorded at 24 bits, -12 dB
    write_pcm(tmp_path / "source.wav", ints, rate, 3)
    host = Arrangement(rate, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    clip = host.add_clip("t", tmp_path / "source.wav", start=0)
    selection = Selection(rate // 2, rate)
    take = PluginShell(host, NoiseBackend(), daw="reaper").inpaint("t", clip, selection=selection)
    out, out_rate, width = read_pcm(take.path)
    assert (out_rate, width, out.shape) == (rate, 3, ints.shape)
    keep = np.ones(ints.shape[1], bool)
    keep[selection.start : selection.end] = False
    assert np.count_nonzero(out[:, keep] != ints[:, keep]) == 0
    assert np.count_nonzero(out[:, ~keep] != ints[:, ~keep]) > 0.9 * out[:, ~keep].size  # the selection is new
