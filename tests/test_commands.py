"""``sa3 generate | inpaint | extend | variation | encode | decode`` round trips on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sa3_engine.audio import read_audio, write_wav
from sa3_engine.cli.generate import _parse_lora
from sa3_engine.cli.main import main

SR = 44100
TINY = ["--model", "tiny-random", "-q"]


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sa3(*argv: str) -> int:
    return main(list(argv))


def sidecar(path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_generate_writes_a_wav_and_a_sidecar_and_never_overwrites(cwd, capsys):
    assert sa3("generate", "-p", "a dry kick", "--duration", "0.5", "--seed", "7", "--steps", "3", *TINY) == 0
    audio, rate = read_audio(cwd / "output.wav")
    assert (rate, audio.shape) == (SR, (2, SR // 2))
    meta = sidecar(cwd / "output.wav")
    assert (meta["model"], meta["prompt"], meta["seed"], meta["file"]) == ("tiny-random", "a dry kick", 7, "output.wav")
    assert meta["params"]["steps"] == 3 and meta["params"]["duration"] == 0.5 and meta["params"]["mode"] == "generate"
    assert {"text", "sample", "decode", "total"} <= set(meta["timings"])
    first = (cwd / "output.wav").read_bytes()

    assert sa3("generate", "-p", "a dry kick", "--duration", "0.5", "--seed", "8", "--steps", "3", *TINY) == 0
    assert (cwd / "output-1.wav").is_file() and sidecar(cwd / "output-1.wav")["seed"] == 8
    assert (cwd / "output.wav").read_bytes() == first
    assert sa3("generate", "--duration", "0.25", "--seed", "9", "--steps", "2", "--force", *TINY) == 0
    assert read_audio(cwd / "output.wav")[0].shape == (2, SR // 4) and sidecar(cwd / "output.wav")["seed"] == 9
    assert "output.wav" in capsys.readouterr().out


def test_one_p_is_one_prompt_and_a_batch_is_asked_for_with_batch_size(cwd, capsys):
    with pytest.raises(SystemExit) as exit_:  # an unquoted prompt of two words: an error, not two files
        sa3("generate", "-p", "drum", "fill", "--duration", "0.25", *TINY)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments: fill" in err and '-p "drum fill"' in err
    assert not list(cwd.iterdir())
    assert sa3("generate", "-p", "drum fill", "--batch-size", "2", "--duration", "0.25", "--seed", "3",
               "--steps", "2", "-o", "take", "--format", "float", *TINY) == 0
    metas = [sidecar(cwd / f"take_{i}.wav") for i in range(2)]
    assert [m["prompt"] for m in metas] == ["drum fill"] * 2 and [m["seed"] for m in metas] == [3, 4]
    assert all(m["format"] == "float" for m in metas)
    # -p before the file: the file name is the input, not a second prompt
    assert sa3("inpaint", "-p", "x", "take_0.wav", "--mask-start", "0.1", "--mask-end", "0.2", "--steps", "1",
               *TINY) == 0
    assert sidecar(cwd / "take_0-inpaint.wav")["prompt"] == "x"


def test_inpaint_extend_and_variation_on_a_generated_file(cwd):
    assert sa3("generate", "-p", "src", "--duration", "1.0", "--seed", "1", "--steps", "2", "--format", "float",
               "-o", "src.wav", *TINY) == 0
    source, _ = read_audio(cwd / "src.wav")

    assert sa3("inpaint", "src.wav", "--mask-start", "0.2", "--mask-end", "0.4", "--mask-start", "0.6", "--mask-end", "0.7",
               "--steps", "2", "--format", "float", *TINY) == 0
    out, _ = read_audio(cwd / "src-inpaint.wav")
    keep = np.ones(SR, dtype=bool)
    keep[int(0.2 * SR) : int(0.4 * SR)] = keep[int(0.6 * SR) : int(0.7 * SR)] = False
    np.testing.assert_array_equal(out[:, keep], source[:, keep])
    meta = sidecar(cwd / "src-inpaint.wav")
    assert meta["source"] == "src.wav" and meta["params"]["mask_start"] == [0.2, 0.6] and meta["params"]["mask_end"] == [0.4, 0.7]

    assert sa3("extend", "src.wav", "--add", "0.5", "--steps", "2", "--format", "float", *TINY) == 0
    longer, _ = read_audio(cwd / "src-extend.wav")
    assert longer.shape == (2, round(1.5 * SR))
    np.testing.assert_array_equal(longer[:, :SR], source)

    assert sa3("variation", "src.wav", "--init-noise-level", "0.5", "--steps", "2", *TINY) == 0
    assert read_audio(cwd / "src-variation.wav")[0].shape == (2, SR)
    assert sidecar(cwd / "src-variation.wav")["params"]["init_noise_level"] == 0.5


def test_encode_then_decode_gives_back_the_length(cwd):
    assert sa3("generate", "--duration", "0.7", "--seed", "2", "--steps", "2", "-o", "clip.wav", *TINY) == 0
    assert sa3("encode", "clip.wav", *TINY) == 0
    with safe_open(str(cwd / "clip.latents.safetensors"), framework="pt") as f:
        latents, meta = f.get_tensor("latents"), f.metadata()
    assert latents.shape[0] == 16 and meta["samples"] == str(round(0.7 * SR)) and meta["model"] == "tiny-random"
    assert sa3("decode", "clip.latents.safetensors", *TINY) == 0
    audio, rate = read_audio(cwd / "clip-decoded.wav")
    assert (rate, audio.shape) == (SR, (2, round(0.7 * SR))) and np.abs(audio).max() > 0
    assert sa3("encode", "clip.wav", *TINY) == 0 and (cwd / "clip-1.latents.safetensors").is_file()


def test_encode_and_decode_honour_the_autoencoder_dtype(cwd, capsys):
    assert sa3("generate", "--duration", "0.5", "--seed", "3", "--steps", "2", "-o", "clip.wav", *TINY) == 0
    assert sa3("encode", "clip.wav", "-o", "full", *TINY) == 0
    assert sa3("encode", "clip.wav", "-o", "half", "--dtype", "bfloat16", *TINY) == 0
    full, half = (load_file(f"{name}.latents.safetensors")["latents"] for name in ("full", "half"))
    assert full.dtype == half.dtype == torch.float32
    assert not torch.equal(full, half) and (full - half).abs().max() < 0.05 * full.abs().max()
    decode = ("decode", "full.latents.safetensors", "--format", "float", *TINY)
    assert sa3(*decode, "-o", "a.wav", "--dtype", "float16") == 0 and sa3(*decode, "-o", "b.wav") == 0
    assert not np.array_equal(read_audio(cwd / "a.wav")[0], read_audio(cwd / "b.wav")[0])
    assert sa3("encode", "clip.wav", "--dtype", "int8", *TINY) == 2
    assert "--dtype" in capsys.readouterr().err


def test_without_a_model_it_says_which_to_pass(cwd, capsys):
    assert sa3("generate", "-p", "x") == 2
    err = capsys.readouterr().err
    assert "--model tiny-random" in err and "small-music" in err
    assert not list(cwd.iterdir())


def test_bad_arguments_fail_with_the_field_named(cwd, capsys):
    with pytest.raises(SystemExit, match="2"):
        sa3("generate", "--duration", "-2", *TINY)
    assert "argument --duration: expected a number > 0" in capsys.readouterr().err
    assert sa3("generate", "--duration", "0.1", "-o", "x.mp3", *TINY) == 2
    assert "--output" in capsys.readouterr().err
    assert sa3("generate", "--duration", "0.25", "--steps", "2", "-o", "src.wav", *TINY) == 0
    assert sa3("inpaint", "src.wav", "--mask-start", "0.2", "--mask-end", "0.1", *TINY) == 2
    assert "--mask-end: the end (0.1 s) must be after the start (0.2 s)" in capsys.readouterr().err
    assert sa3("extend", "src.wav", "--duration", "0.1", *TINY) == 2
    assert "error: --duration: 0.1 s must be longer than the input" in capsys.readouterr().err
    assert sa3("extend", "src.wav", "--duration", "1", "--add", "1", *TINY) == 2
    assert "--duration / --add" in capsys.readouterr().err
    assert sa3("variation", "missing.wav", *TINY) == 2
    assert "missing.wav" in capsys.readouterr().err


def test_lora_flags_take_an_optional_strength():
    assert _parse_lora("style.safetensors:0.5") == ("style.safetensors", 0.5)
    assert _parse_lora("style.safetensors") == ("style.safetensors", 1.0)
    assert _parse_lora(r"C:\loras\style.safetensors") == (r"C:\loras\style.safetensors", 1.0)


def test_corrupt_or_non_finite_inputs_are_one_line_errors(cwd, capsys):
    (cwd / "broken.safetensors").write_bytes(b"\x00" * 64)
    assert sa3("generate", "--duration", "0.25", "--lora", "broken.safetensors", *TINY) == 2
    err = capsys.readouterr().err
    assert err.startswith("sa3 generate: error: --lora (number 1): ") and "not a safetensors LoRA file" in err
    assert err.count("\n") == 1
    assert sa3("decode", "broken.safetensors", *TINY) == 2
    assert "input: broken.safetensors is not a safetensors latents file" in capsys.readouterr().err
    save_file({"latents": torch.full((16, 8), float("nan"))}, str(cwd / "nan.latents.safetensors"))
    assert sa3("decode", "nan.latents.safetensors", *TINY) == 2
    assert "input: nan.latents.safetensors holds NaN or infinite latents" in capsys.readouterr().err
    assert not list(cwd.glob("*.wav"))
    assert sa3("generate", "--duration", "1e7", *TINY) == 2
    assert "error: --duration: 1e+07 s is longer than the limit" in capsys.readouterr().err


def test_a_leftover_sidecar_keeps_its_name(cwd):
    (cwd / "output.json").write_text("{}")  # e.g. its WAV was moved into the DAW project
    assert sa3("generate", "--duration", "0.25", "--steps", "2", *TINY) == 0
    assert (cwd / "output-1.wav").is_file() and (cwd / "output.json").read_text() == "{}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mask-start", "5", "--mask-end", "6"], "--mask-start: 5 s is past the end of the input (1 s)"),
        (["--mask-start", "0.5", "--mask-end", "2"], "--mask-end: 2 s is past the requested duration (1 s)"),
        (["--mask-start", "-1", "--mask-end", "0.5"], "argument --mask-start: expected seconds >= 0"),
    ],
)
def test_a_selection_outside_the_clip_is_refused_before_the_model_loads(cwd, capsys, monkeypatch, argv, message):
    """In the option's name and seconds, and before "loading the model": a pipeline that would load fails."""
    from sa3_engine.generation.pipeline import Pipeline

    write_wav(cwd / "song.wav", np.zeros((2, SR), np.float32), SR, "float")

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(Pipeline, "load", load)
    try:
        assert sa3("inpaint", "song.wav", *argv, *TINY) == 2
    except SystemExit as exit_:  # argparse's own check
        assert exit_.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "inpaint_audio" not in err and "mask_start" not in err


@pytest.mark.parametrize("rate", [48000, 22050])
def test_the_output_keeps_the_input_rate_and_a_24_bit_inpaint_its_samples(cwd, rate):
    from test_wav import random_ints, read_pcm, write_pcm

    ints = random_ints(24, (2, rate), seed=5) // 8
    write_pcm(cwd / "song.wav", ints, rate, 3)
    assert sa3("inpaint", "song.wav", "--mask-start", "0.25", "--mask-end", "0.5", "--steps", "1", *TINY) == 0
    out, out_rate, width = read_pcm(cwd / "song-inpaint.wav")
    assert (out_rate, width, out.shape) == (rate, 3, ints.shape) and sidecar(cwd / "song-inpaint.wav")["sample_rate"] == rate
    keep = np.ones(rate, bool)
    keep[int(0.25 * rate) : int(0.5 * rate)] = False
    assert np.count_nonzero(out[:, keep] != ints[:, keep]) == 0
    assert sa3("extend", "song.wav", "--add", "0.5", "--steps", "1", "--format", "float", *TINY) == 0
    longer, longer_rate = read_audio(cwd / "song-extend.wav")
    assert longer_rate == rate and longer.shape == (2, round(1.5 * rate))
    assert np.array_equal(longer[:, :rate], ints / 2.0**23)
    assert sa3("variation", "song.wav", "--steps", "1", "--sample-rate", "44100", *TINY) == 0
    assert read_audio(cwd / "song-variation.wav")[1] == 44100
