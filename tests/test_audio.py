import numpy as np
import pytest

from sa3_engine import audio as A


def test_as_audio_converts_and_never_aliases_input():
    src = (np.arange(8, dtype=np.int16) * 1000).reshape(1, 8)
    out = A.as_audio(src)
    assert out.dtype == np.float32 and out.shape == (1, 8)
    assert out[0, 1] == pytest.approx(1000 / 32768)
    f = np.zeros((2, 10), np.float32)
    A.as_audio(f)[0, 0] = 1.0
    assert f[0, 0] == 0.0


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.0, np.nan]], np.float32), "NaN"),
        (np.zeros((2, 0), np.float32), "empty"),
        (np.zeros((1000, 2), np.float32), "(samples, channels)"),
        (np.zeros((2, 2, 2), np.float32), "shape"),
    ],
)
def test_as_audio_rejects_bad_input_naming_the_field(bad, message):
    with pytest.raises(ValueError, match="inpaint_audio") as err:
        A.as_audio(bad, "inpaint_audio")
    assert message in str(err.value)


def test_sample_rate_checked():
    with pytest.raises(ValueError, match="sample rate"):
        A.check_sample_rate(0)
    with pytest.raises(ValueError):
        A.check_sample_rate(44100.5)
    assert A.check_sample_rate(np.int64(48000)) == 48000


@pytest.mark.parametrize("src, dst", [(48000, 44100), (96000, 44100), (44100, 48000), (22050, 44100)])
def test_resample_exact_length_and_alignment(src, dst):
    x = np.zeros((2, src), np.float32)
    x[:, src // 4] = 1.0
    y = A.resample(x, src, dst)
    assert y.shape == (2, round(src * dst / src))
    assert abs(int(np.argmax(np.abs(y[0]))) - round(src // 4 * dst / src)) <= 1


def test_resample_keeps_a_sine_in_band():
    sr_in, sr_out = 48000, 44100
    t = np.arange(sr_in) / sr_in
    y = A.resample(np.sin(2 * np.pi * 1000 * t)[None].astype(np.float32), sr_in, sr_out)
    ref = np.sin(2 * np.pi * 1000 * np.arange(sr_out) / sr_out)
    # pedalboard's sinc leaves a sub-sample delay (~0.2 samples), so allow a small phase error
    assert np.max(np.abs(y[0, 1000:-1000] - ref[1000:-1000])) < 5e-2


def test_prepare_mono_to_stereo():
    out = A.prepare(np.ones(100, np.float32) * 0.5, 44100, 44100, 2)
    assert out.shape == (2, 100) and np.all(out == 0.5)


def test_splice_keeps_source_bit_identical_outside_regions():
    rng = np.random.default_rng(0)
    src = rng.uniform(-1, 1, (2, 10000)).astype(np.float32)
    gen = rng.uniform(-1, 1, (2, 10000)).astype(np.float32)
    regions = [(1000, 3000), (6000, 7000)]
    out = A.splice(src, gen, regions, fade=256)
    keep = np.ones(10000, bool)
    for s, e in regions:
        keep[s:e] = False
    assert np.array_equal(out[:, keep], src[:, keep])
    assert np.array_equal(out[:, 1400:2600], gen[:, 1400:2600])


def test_splice_crossfades_with_equal_power_inside_each_region():
    """Measured, not recomputed: splicing 1s into 0s and 0s into 1s gives each side's gain per sample."""
    regions, fade, n = [(1000, 3000), (6000, 7000)], 256, 10000
    ones, zeros = np.ones((2, n), np.float32), np.zeros((2, n), np.float32)
    source_gain = A.splice(ones, zeros, regions, fade)[0].astype(np.float64)
    new_gain = A.splice(zeros, ones, regions, fade)[0].astype(np.float64)
    np.testing.assert_allclose(source_gain**2 + new_gain**2, 1.0, atol=1e-6)  # equal power at every sample
    for start, end in regions:
        out_fade, in_fade = source_gain[start : start + fade], source_gain[end - fade : end]
        assert source_gain[start - 1] == 1 and source_gain[end] == 1  # the fades sit inside the region
        assert np.all(np.diff(out_fade) < 0) and out_fade[0] > 0.99 and out_fade[-1] < 0.01  # source out
        assert np.all(np.diff(in_fade) > 0) and in_fade[0] < 0.01 and in_fade[-1] > 0.99  # and back in
        assert np.all(source_gain[start + fade : end - fade] == 0)  # only new audio in between
        assert abs(out_fade[fade // 2] - np.sqrt(0.5)) < 0.01  # halfway: both at -3 dB


def test_splice_continuation_tail_is_generated():
    src = np.ones((2, 100), np.float32)
    gen = np.zeros((2, 300), np.float32)
    out = A.splice(src, gen, [(100, 300)], fade=32)
    assert np.array_equal(out[:, :100], src) and np.array_equal(out[:, 100:], gen[:, 100:])


def test_write_wav_atomic_unique_and_round_trip(tmp_path):
    x = (np.random.default_rng(1).uniform(-0.9, 0.9, (2, 4410))).astype(np.float32)
    p = A.write_wav(tmp_path / "a.wav", x, 44100, "24")
    y, sr = A.read_audio(p)
    assert sr == 44100 and y.shape == x.shape and np.max(np.abs(y - x)) < 1e-6
    assert A.unique_path(p) == tmp_path / "a-1.wav"
    assert A.unique_path(p, force=True) == p
    f = A.write_wav(tmp_path / "f.wav", x * 2, 48000, "float")  # float keeps overs
    y, _ = A.read_audio(f)
    assert np.array_equal(y, x * 2)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.wav", "f.wav"]  # no temp files left
    with pytest.raises(ValueError, match="bit_depth"):
        A.write_wav(tmp_path / "b.wav", x, 44100, "12")


def test_unique_path_counts_sidecars_and_two_part_endings(tmp_path):
    (tmp_path / "take.json").write_text("{}")  # a sidecar left without its audio still holds the name
    assert A.unique_path(tmp_path / "take.wav") == tmp_path / "take.wav"
    assert A.unique_path(tmp_path / "take.wav", sidecars=(".json",)) == tmp_path / "take-1.wav"
    assert A.unique_path(tmp_path / "take.wav", force=True, sidecars=(".json",)) == tmp_path / "take.wav"
    (tmp_path / "clip.latents.safetensors").write_bytes(b"")
    assert A.unique_path(tmp_path / "clip.latents.safetensors", suffix=".latents.safetensors") == (
        tmp_path / "clip-1.latents.safetensors")


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "meta.json"
    A.write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        A.write_json(target, {(1, 2): "a tuple key is not JSON"})
    assert [p.name for p in target.parent.iterdir()] == ["meta.json"] and target.read_text() == '{\n  "a": 1\n}'
    with pytest.raises(RuntimeError), A.atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")
    assert not (tmp_path / "x.bin").exists() and not list(tmp_path.glob(".x.bin*"))


def test_prepare_refuses_audio_over_the_limit_before_copying():
    audio = np.zeros((2, 4410), np.float32)
    assert A.length_seconds(audio, 44100) == pytest.approx(0.1)
    assert A.prepare(audio, 44100, 44100, 2, max_seconds=0.1).shape == (2, 4410)
    with pytest.raises(ValueError, match=r"^init_audio: 0\.1 s is longer than the limit of 0\.05 s"):
        A.prepare(audio, 44100, 44100, 2, field="init_audio", max_seconds=0.05)
    with pytest.raises(ValueError, match="^init_audio sample rate"):
        A.length_seconds(audio, 0, "init_audio")
