"""SAME autoencoders: official parity vectors, lengths, chunked stitching, other sizes, key layout."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sa3_engine.models.config import ConfigError
from sa3_engine.models.same import ResamplingBlock, SAMEAutoencoder, chunk_starts, surviving_ranges
from sa3_engine.models.same_config import NORM_EPS, block_specs
from sa3_engine.parity import run_case

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY = SHARED / "parity"
REFERENCE = SHARED / "reference"


def tiny_config(
    layout: str,
    *,
    patch: int = 8,
    strides=(4,),
    c_mults=(2,),
    depths=(2,),
    dim_heads: int = 8,
    chunk_size: int = 8,
) -> dict:
    """A standalone SAME config: ``layout`` "chunked" (SAME-S style) or "window" (SAME-L style)."""
    side = {
        "channels": 8,
        "c_mults": list(c_mults),
        "strides": list(strides),
        "transformer_depths": list(depths),
        "latent_dim": 6,
        "differential": True,
        "dim_heads": dim_heads,
        "dyt": True,
        "variable_stride": True,
        "ff_mult": 3,
    }
    if layout == "chunked":
        side.update(chunk_size=chunk_size, chunk_midpoint_shift=True, sliding_window=None)
    else:
        side.update(sliding_window=[1, 1])
    ratio = patch
    for s in strides:
        ratio *= s
    return {
        "model_type": "autoencoder",
        "sample_rate": 44100,
        "model": {
            "encoder": {"config": {**side, "in_channels": 2 * patch, "conv_mapping": False}},
            "decoder": {
                "config": {
                    **side,
                    "out_channels": 2 * patch,
                    "conv_mapping": layout == "chunked",
                    "sinusoidal_blocks": [2 if layout == "window" else 0] * len(strides),
                }
            },
            "bottleneck": {"config": {"dim": 6, "auto_scale": True}},
            "pretransform": {"config": {"channels": 2, "patch_size": patch}},
            "latent_dim": 6,
            "downsampling_ratio": ratio,
            "io_channels": 2,
        },
    }


def tiny_model(layout: str, **sizes) -> SAMEAutoencoder:
    torch.manual_seed(0)
    return SAMEAutoencoder.from_config(tiny_config(layout, **sizes)).eval()


@pytest.mark.parametrize("case", ["03_same_s_autoencoder", "04_same_l_autoencoder"])
def test_official_parity_vectors(case):
    path = PARITY / case
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    rows = run_case(path)
    assert {r.tensor for r in rows} >= {"latents", "decoded", "latents_chunked", "decoded_chunked"}
    assert all(r.ok for r in rows), "\n".join(r.line() for r in rows if not r.ok)


def test_odd_latent_counts_follow_the_padding_rules():
    chunked, window = tiny_model("chunked"), tiny_model("window")
    ratio = chunked.downsampling_ratio
    audio = torch.randn(1, 2, 3 * ratio)
    # Chunked layout pads to whole chunks of 2 latents; the sliding window does not.
    assert chunked.encode(audio).shape[-1] == chunked.encoded_length(3 * ratio) == 4
    assert window.encode(audio).shape[-1] == window.encoded_length(3 * ratio) == 3
    assert chunked.encode_chunked(audio, chunk_size=2, overlap=0).shape[-1] == 3
    latents = torch.randn(1, 6, 3)
    assert chunked.decode(latents).shape[-1] == chunked.decoded_length(3) == 4 * ratio
    assert window.decode(latents).shape[-1] == window.decoded_length(3) == 3 * ratio
    assert chunked.decode_chunked(latents, chunk_size=2, overlap=0).shape[-1] == 3 * ratio
    # Shorter than one chunk: one plain call, padding included.
    assert chunked.decode_chunked(latents, chunk_size=8, overlap=2).shape[-1] == 4 * ratio


@pytest.mark.parametrize("layout", ["chunked", "window"])
def test_chunked_equals_plain_when_the_overlap_covers_the_receptive_field(layout):
    # Depth 2 sees at most 2 latent groups to each side, and hops of 4 keep SAME-S chunks aligned,
    # so trimming overlap // 2 = 2 latents leaves only positions computed from a full context.
    model = tiny_model(layout)
    latents = torch.randn(2, 6, 20)
    plain = model.decode(latents)
    torch.testing.assert_close(
        model.decode_chunked(latents, chunk_size=8, overlap=4), plain, atol=1e-5, rtol=1e-5
    )
    audio = plain.clamp(-1, 1)
    torch.testing.assert_close(
        model.encode_chunked(audio, chunk_size=8, overlap=4), model.encode(audio), atol=1e-5, rtol=1e-5
    )
    # Without overlap the chunk edges show: the comparison above can fail.
    assert not torch.allclose(model.decode_chunked(latents, chunk_size=8, overlap=0), plain, atol=1e-3)


def _official_stitch(out_starts: list[int], chunk: int, trim: int, total: int) -> list[int]:
    """Which chunk each output position comes from, by writing chunks in order as the official code does."""
    owner = [-1] * total
    for i, start in enumerate(out_starts):
        lo = 0 if i == 0 else trim
        hi = chunk if i == len(out_starts) - 1 else chunk - trim
        owner[start + lo : start + hi] = [i] * (hi - lo)
    return owner


def test_surviving_ranges_reproduce_overwrite_stitching():
    for total in range(4, 40):
        for chunk in range(2, total + 1):
            for overlap in range(chunk):
                starts = chunk_starts(total, chunk, chunk - overlap)
                assert starts[-1] == total - chunk
                owner = [-1] * total
                for i, (start, (lo, hi)) in enumerate(
                    zip(starts, surviving_ranges(starts, chunk, overlap // 2), strict=True)
                ):
                    owner[start + lo : start + hi] = [i] * (hi - lo)
                assert owner == _official_stitch(starts, chunk, overlap // 2, total), (total, chunk, overlap)


def test_decode_chunked_reports_progress_and_can_be_stopped():
    model = tiny_model("window")
    latents = torch.randn(1, 6, 12)
    calls = []
    model.decode_chunked(
        latents, chunk_size=4, overlap=2, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.decode_chunked(latents, chunk_size=4, overlap=2, progress=stop)


def test_only_a_decoder_without_a_sliding_window_is_compiled():
    """--compile: a sliding-window decoder (SAME-L) recompiled at every new length, minutes each."""
    assert tiny_model("chunked").compile_decoder() is True
    assert tiny_model("window").compile_decoder() is False


@pytest.mark.parametrize("layout", ["chunked", "window"])
def test_other_sizes_build_and_round_trip_shapes(layout):
    # Two stages, another patch size, strides, widths (the second stage keeps its width: no mapping), heads,
    # depths; the chunk (12 fine tokens in both stages) holds 6 and 4 latent groups.
    model = tiny_model(
        layout, patch=4, strides=(2, 3), c_mults=(2, 2), depths=(1, 3), dim_heads=4, chunk_size=12
    )
    assert model.downsampling_ratio == 24
    audio = torch.randn(2, 2, 7 * 24 + 5)
    latents = model.encode(audio)
    assert latents.shape == (2, 6, model.encoded_length(audio.shape[-1]))
    assert model.decode(latents).shape == (2, 2, model.decoded_length(latents.shape[-1]))
    keys = model.state_dict().keys()
    assert (
        "encoder.layers.0.mapping.weight_v" in keys
        and "encoder.layers.1.transformers.2.rope.inv_freq" in keys
    )
    assert not any(k.startswith("encoder.layers.1.mapping") for k in keys)
    assert {"encoder.layers.3.weight", "decoder.layers.1.weight", "decoder.layers.4.mapping.bias"} <= keys
    assert model.state_dict()["decoder.layers.3.transformers.2.rope.inv_freq"].shape == (1,)


@pytest.mark.parametrize("name", ["small-music", "medium"])
def test_keys_match_the_released_checkpoints(name):
    config_path, keys_path = REFERENCE / "configs" / f"{name}.json", REFERENCE / f"keys-{name}.json"
    if not keys_path.is_file():
        pytest.skip(f"{keys_path} not present")
    prefix = "pretransform.model."
    expected = {
        k[len(prefix) :]: list(s)
        for k, s in json.loads(keys_path.read_text())["keys"].items()
        if k.startswith(prefix)
    }
    with torch.device("meta"):
        model = SAMEAutoencoder.from_config(json.loads(config_path.read_text()))
    assert {k: list(t.shape) for k, t in model.state_dict().items()} == expected


def test_config_errors_name_the_field():
    config = tiny_config("chunked")
    bad = copy.deepcopy(config)
    bad["model"]["encoder"]["config"]["layer_scale"] = True
    with pytest.raises(ConfigError, match="encoder.config.layer_scale"):
        SAMEAutoencoder.from_config(bad)
    bad = copy.deepcopy(config)
    bad["model"]["decoder"]["config"]["chunk_size"] = 12  # 3 groups of 5 tokens: no half-chunk shift
    with pytest.raises(ConfigError, match="decoder.config"):
        SAMEAutoencoder.from_config(bad)
    with pytest.raises(ConfigError, match="sample_rate"):
        SAMEAutoencoder.from_config(config["model"])
    bad = copy.deepcopy(config)
    del bad["model"]["encoder"]["config"]["strides"]
    with pytest.raises(ConfigError, match=r"config field model\.encoder\.config\.strides is missing"):
        SAMEAutoencoder.from_config(bad)
    del bad["model"]["bottleneck"]["config"]
    with pytest.raises(ConfigError, match=r"config field model\.bottleneck\.config is missing"):
        SAMEAutoencoder.from_config(bad)
    with pytest.raises(ValueError, match="audio"):
        tiny_model("window").encode(torch.randn(1, 3, 64))


def test_norm_eps_is_spec_data_used_by_every_norm():
    """rms norms (dyt off) take the block spec's eps: the official hard-coded 1e-3 unless a spec says otherwise."""
    side = {**tiny_config("window")["model"]["encoder"]["config"], "dyt": False}
    (spec,) = block_specs(side, "encoder", "encoder.config")
    assert spec.norm_eps == NORM_EPS == 1e-3
    layer = ResamplingBlock(replace(spec, norm_eps=0.25)).transformers[0]
    assert {m.eps for m in (layer.pre_norm, layer.ff_norm, layer.self_attn.q_norm, layer.self_attn.k_norm)} == {0.25}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["chunked", "window"])
def test_a_half_precision_autoencoder_takes_float32_and_returns_float32(layout, dtype):
    full = tiny_model(layout)
    half = tiny_model(layout).to(dtype)
    audio = torch.randn(1, 2, 10 * full.downsampling_ratio, generator=torch.Generator().manual_seed(3)) * 0.3
    latents = full.encode(audio)
    pairs = [
        (half.encode(audio), latents),
        (half.encode_chunked(audio, chunk_size=4, overlap=2), full.encode_chunked(audio, chunk_size=4, overlap=2)),
        (half.decode(latents), full.decode(latents)),
        (half.decode_chunked(latents, chunk_size=4, overlap=2), full.decode_chunked(latents, chunk_size=4, overlap=2)),
    ]
    for got, expected in pairs:
        assert got.dtype == torch.float32
        assert (got - expected).abs().max() < 0.05 * expected.abs().max()
