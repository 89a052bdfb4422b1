"""Precision modes: which is chosen, how it is reported, and that "fast" stays close to "fp32" (no timing here).

Tolerances are loose on purpose: bfloat16 keeps 8 mantissa bits, and kernels differ between CPUs (AMX,
AVX512-BF16, emulation), so these bound the error the mode is documented to have (docs/performance.md),
well above what any x86-64 CPU gives, and far below what a wrong cast or a stale cache would give.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sa3_engine.generation.noise import SeededNoise
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.generation.window import Window
from sa3_engine.models.dit import StepCache
from sa3_engine.runtime import device as device_module
from sa3_engine.runtime.device import pick_precision, precision_name

PROMPT = "a drum loop"


@pytest.fixture(scope="module")
def pipes() -> dict[str, Pipeline]:
    return {name: Pipeline.load("tiny-random", device="cpu", precision=name) for name in ("fp32", "fast")}


@pytest.mark.parametrize(("native", "expected"), [(True, ("bfloat16", "bfloat16")), (False, ("float32", "float32"))])
def test_auto_picks_fast_only_on_cpus_with_native_bfloat16(monkeypatch, native, expected):
    monkeypatch.setattr(device_module, "native_bf16_cpu", lambda: native)
    assert pick_precision("cpu") == pick_precision("cpu", "auto") == expected


def test_explicit_modes_and_overrides():
    assert pick_precision("cpu", "fp32") == ("float32", "float32")
    assert pick_precision("cpu", "fast") == ("bfloat16", "bfloat16")
    assert pick_precision("cuda", "auto") == ("float16", "float32")  # the official model_half, decoder in float32
    assert pick_precision("mps", "auto") == ("float32", "float32")  # as the official loader runs MPS
    assert pick_precision("cpu", "fast", autoencoder_dtype="float32") == ("bfloat16", "float32")
    assert pick_precision("cpu", "auto", dtype="fp32", autoencoder_dtype="float32") == ("float32", "float32")


@pytest.mark.parametrize(("kwargs", "field"), [({"requested": "turbo"}, "precision"),
                                               ({"requested": "fp32", "dtype": "bfloat16"}, "precision"),
                                               ({"requested": "fast", "dtype": "int8"}, "dtype")])
def test_contradictory_or_unknown_choices_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        pick_precision("cpu", **kwargs)


def test_precision_name_is_fp32_only_when_everything_is_float32():
    assert precision_name(torch.float32, "float32") == "fp32"
    assert precision_name(torch.bfloat16, torch.bfloat16) == precision_name("float32", torch.bfloat16) == "fast"


def test_fast_pipeline_stores_bfloat16_weights_once_and_keeps_rotary_tables_float32(pipes):
    fast = pipes["fast"].model
    assert {p.dtype for p in fast.dit.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fast.autoencoder.parameters()} == {torch.bfloat16}
    assert {b.dtype for n, b in fast.named_buffers() if n.endswith("inv_freq")} == {torch.float32}
    assert {p.dtype for p in pipes["fp32"].model.parameters()} == {torch.float32}


def test_every_result_reports_its_precision(pipes):
    for name, expected in (("fp32", ("float32", "float32")), ("fast", ("bfloat16", "bfloat16"))):
        (gen,) = pipes[name].generate(PROMPT, duration=1.0, steps=2, seed=0)
        assert (gen.params["precision"], gen.params["dtype"], gen.params["autoencoder_dtype"]) == (name, *expected)


def _window(pipe: Pipeline, seed: int, seconds: float = 3.0):
    window = Window(text=pipe.encode_text([PROMPT]), seconds=[seconds], steps=8)
    return pipe.sample_window(window, SeededNoise.from_seeds([seed], pipe.geometry.own_frames([seconds])))


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_latents_and_audio_stay_close_to_fp32(pipes, seed):
    """On the tiny model fast measures ~0.2% latent error and ~45 dB audio SNR against fp32."""
    with torch.no_grad():
        ref, fast = _window(pipes["fp32"], seed), _window(pipes["fast"], seed)
        assert fast.latents.dtype == torch.float32  # the sampler state stays float32
        rel = float((fast.latents - ref.latents).norm() / ref.latents.norm())
        assert rel < 0.03
        a = pipes["fp32"].decode_items(ref, [3.0])[0].astype(np.float64)
        b = pipes["fast"].decode_items(fast, [3.0])[0].astype(np.float64)
    snr = 10 * np.log10((a**2).sum() / ((a - b) ** 2).sum())
    assert snr > 25.0


def test_step_cache_computes_the_conditioning_once_and_changes_nothing(pipes):
    dit = pipes["fp32"].model.dit
    g = torch.Generator().manual_seed(0)
    frames = 16
    x = torch.randn(1, dit.io_channels, frames, generator=g)
    cross = torch.randn(1, 5, dit.to_cond_embed[0].in_features, generator=g)
    glob = torch.randn(1, dit.to_global_embed[0].in_features, generator=g)
    local = torch.randn(1, dit.local_add_cond_dim, frames, generator=g)
    calls = []
    cache = StepCache()
    original = dit._layer_conditioning
    dit._layer_conditioning = lambda *a: calls.append(1) or original(*a)
    try:
        with torch.no_grad():
            for t in (0.9, 0.5, 0.1):
                tt = torch.tensor([t])
                assert torch.equal(dit(x, tt, cross, glob, local, cache=cache), dit(x, tt, cross, glob, local))
    finally:
        del dit._layer_conditioning
    assert len(calls) == 1 + 3  # once for the cached calls, once per uncached call


@pytest.mark.parametrize("mode", ["fp32", "fast"])
def test_sa3_generate_takes_precision_and_writes_it_in_the_sidecar(tmp_path, monkeypatch, mode):
    from sa3_engine.cli.main import main

    monkeypatch.chdir(tmp_path)
    argv = ["generate", "-p", "kick", "--duration", "0.25", "--steps", "1", "--model", "tiny-random", "-q",
            "--precision", mode]
    assert main(argv) == 0
    sidecar = json.loads((tmp_path / "output.json").read_text())
    assert sidecar["params"]["precision"] == mode and sidecar["params"]["compiled"] is False


def test_a_compiled_pipeline_generates_what_the_eager_one_does():
    """--compile compiles the DiT's blocks and the SAME decoder's layers; fused kernels may round
    differently, nothing else may change."""
    eager = Pipeline.load("tiny-random", precision="fp32")
    compiled = Pipeline.load("tiny-random", precision="fp32", compile=True)
    assert compiled.model.dit.compiled and not eager.model.dit.compiled
    (a,) = eager.generate("kick", duration=1.0, steps=2, seed=3)
    (b,) = compiled.generate("kick", duration=1.0, steps=2, seed=3)
    assert b.params["compiled"] is True
    np.testing.assert_allclose(b.audio, a.audio, atol=1e-4)
    assert np.abs(a.audio).max() > 1e-3  # not two silences
