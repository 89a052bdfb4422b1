"""The generation pipeline on the tiny random model: lengths, seeds, batching, inpainting and splicing,
continuation, chained windows, audio-to-audio, LoRAs, validation, progress and cancellation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sa3_engine.audio import prepare
from sa3_engine.generation.chain import chain_windows
from sa3_engine.generation.codec import CODEC_CHUNK, CODEC_OVERLAP, DECODE_CONTEXT, codec_decode
from sa3_engine.generation.geometry import Geometry
from sa3_engine.generation.noise import SeededNoise
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.generation.window import Window
from sa3_engine.models.lora import loaded_loras
from sa3_engine.models.same import chunk_starts
from sa3_engine.weights.registry import resolve

SR = 44100


def model_folder(tmp_path_factory, name: str, **changes):
    """A copy of the tiny model folder (weights and text encoder linked) with config fields changed."""
    tiny = resolve("tiny-random").folder
    folder = tmp_path_factory.mktemp(name)
    config = json.loads((tiny / "model_config.json").read_text())
    if "sample_size" in changes:
        config["sample_size"] = changes["sample_size"]
    if "objective" in changes:
        config["model"]["diffusion"]["diffusion_objective"] = changes["objective"]
    if "chunked" in changes:
        config["model"]["pretransform"]["chunked"] = changes["chunked"]
    (folder / "model_config.json").write_text(json.dumps(config))
    for entry in tiny.iterdir():
        if entry.name != "model_config.json":
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    """fp32: these tests check exact properties (batching, splicing) at float32 rounding; test_precision
    covers the fast mode, which "auto" picks on CPUs with native bfloat16."""
    return Pipeline.load("tiny-random", precision="fp32")


@pytest.fixture(scope="module")
def short_pipe(tmp_path_factory) -> Pipeline:
    """The tiny model with a 16-frame (1.49 s) maximum window, so chaining is cheap."""
    return Pipeline.load(model_folder(tmp_path_factory, "short", sample_size=16 * 4096))


@pytest.fixture(scope="module")
def base_pipe(tmp_path_factory) -> Pipeline:
    return Pipeline.load(model_folder(tmp_path_factory, "base", objective="rectified_flow"))


def noise(seconds: float, seed: int = 0, rate: int = SR, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((channels, round(seconds * rate)))).astype(np.float32)


# ------------------------------------------------------------------------------------------- sizes


def test_geometry_follows_the_official_length_adaptation():
    g = Geometry(SR, 4096, 8192, 5292032)
    samples = g.window_samples([10.0])  # the reference's worked example
    assert (samples, g.frames(samples)) == (712704, 174)
    assert g.effective_frames([10.0]) == [108] and g.valid_frames([10.0], 174) == [172]
    assert g.window_samples([119.0]) == 5292032  # capped at the config's sample_size
    mask = g.padding_mask([0.5, 10.0], 174)
    assert mask.shape == (2, 174) and mask.sum(1).tolist() == [math.ceil(22050 / 4096) + 64, 172]


def test_pipeline_reads_its_sizes_from_the_config(pipe, short_pipe):
    assert pipe.geometry == Geometry(SR, 4096, 8192, 5292032)
    assert (pipe.sample_rate, pipe.default_steps, pipe.default_cfg_scale, pipe.is_base) == (SR, 8, 1.0, False)
    assert short_pipe.max_seconds == pytest.approx(16 * 4096 / SR)


def test_inpaint_mask_regenerates_frames_whose_first_sample_lies_in_a_region():
    g = Geometry(SR, 4096, 8192, 5292032)
    regions = [(10000, 30000), (50000, 50001), (90000, 95000)]
    samples = g.window_samples([3.0])
    frames = g.frames(samples)
    mask = g.inpaint_mask(regions, [3.0], samples, frames)[0, 0]
    for j in range(frames):
        first = j * 4096
        regenerated = any(s <= first < e for s, e in regions) or first >= 3 * SR
        assert mask[j] == (0.0 if regenerated else 1.0), j


@pytest.mark.parametrize(("samples", "frames"), [(712704, 174), (1000, 7), (4097, 3), (12345, 12345), (50, 100)])
def test_inpaint_mask_equals_the_official_sample_rate_mask_downsampled(samples, frames):
    """Frames are computed directly, with the index rule of F.interpolate(mode="nearest") on the official
    sample-rate mask, for any sizes (also not multiples of each other)."""
    g = Geometry(SR, 4096, 8192, 5292032)
    regions, seconds = [(3, 40), (333, 334), (900, 5000), (9000, 12000)], [0.01, 0.2]
    official = torch.ones(2, samples)
    for start, end in regions:
        official[:, min(start, samples) : min(end, samples)] = 0
    for i, s in enumerate(seconds):
        official[i, min(int(s * SR), samples) :] = 0
    expected = torch.nn.functional.interpolate(official[:, None], size=frames, mode="nearest")
    assert torch.equal(g.inpaint_mask(regions, seconds, samples, frames), expected)


def test_inpaint_mask_needs_no_sample_rate_buffer():
    """2**46 samples (far past any memory at the sample rate) into 1024 frames of 2**36 samples each."""
    g = Geometry(SR, 2**36, 2**36, 2**46)
    mask = g.inpaint_mask([(2**45, 2**45 + 2**40)], [2**46 / SR], 2**46, 1024)[0, 0]
    assert mask.shape == (1024,) and torch.nonzero(mask == 0).flatten().tolist() == list(range(512, 528))


def test_seeded_noise_reproduces_the_official_stream_and_ignores_batch_padding():
    torch.manual_seed(123)
    first, step = torch.randn(1, 16, 20), torch.randn(1, 16, 20)
    single = SeededNoise.from_seeds([123], [20])
    assert torch.equal(single.initial((1, 16, 20)), first) and torch.equal(single(0, first), step)
    batched = SeededNoise.from_seeds([123, 5], [20, 30]).initial((2, 16, 30))
    assert torch.equal(batched[:1, :, :20], first) and not batched[0, :, 20:].any()


def test_chain_plan_covers_the_output_with_crossfaded_joins():
    plan = chain_windows(total=1000, window=300, context=100, crossfade=20)
    assert plan[0].offset == 0 and plan[0].context == 0 and plan[-1].offset + plan[-1].length == 1000
    for before, after in zip(plan, plan[1:], strict=False):
        assert after.offset == before.offset + before.length - after.context
        assert after.regenerate == after.context - 20 and after.length <= 300
    continued = chain_windows(total=1000, window=300, context=100, crossfade=20, source=150)
    assert continued[0].offset == 50 and continued[0].regenerate == continued[0].context == 100


# ------------------------------------------------------------------------------------------- generation


def test_every_item_is_exactly_its_duration_long(pipe):
    durations = [0.3, 1.0, 3.33, 2.0 + 0.4 / SR]
    gens = pipe.generate("lengths", duration=durations, steps=2, seed=1)
    assert [g.audio.shape for g in gens] == [(2, round(d * SR)) for d in durations]
    for g in gens:
        assert g.audio.dtype == np.float32 and np.isfinite(g.audio).all() and np.abs(g.audio).max() <= 1.0
        assert g.audio.any()
    (single,) = pipe.generate("lengths", duration=3.33, steps=2, seed=4)
    assert single.audio.shape == (2, 146853) and single.params["duration"] == 3.33


def test_same_seed_same_audio_and_different_seeds_differ(pipe):
    a, b = (pipe.generate("seed", duration=0.5, steps=3, seed=42)[0] for _ in range(2))
    c = pipe.generate("seed", duration=0.5, steps=3, seed=43)[0]
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.allclose(a.audio, c.audio) and (a.seed, c.seed) == (42, 43)


def test_a_batch_gives_consecutive_seeds_and_batching_does_not_change_an_item(pipe):
    gens = pipe.generate(["one", "two"], duration=[0.5, 2.0], steps=3, seed=[7, 8])
    (alone,) = pipe.generate("one", duration=0.5, steps=3, seed=7)
    np.testing.assert_allclose(gens[0].audio, alone.audio, atol=1e-5)
    assert [g.params["prompt"] for g in gens] == ["one", "two"]
    batch = pipe.generate("b", duration=0.25, steps=2, seed=100, batch_size=3)
    assert [g.seed for g in batch] == [100, 101, 102]
    random_seeds = pipe.generate("b", duration=0.25, steps=2, batch_size=2)
    assert random_seeds[1].seed == random_seeds[0].seed + 1


def test_progress_counts_each_stage_and_a_raising_callback_cancels(pipe):
    events = []
    pipe.generate("progress", duration=0.5, steps=4, seed=1, callback=events.append)
    assert all(set(e) == {"stage", "i", "n"} for e in events)
    for stage in ("sample", "decode"):
        counts = [(e["i"], e["n"]) for e in events if e["stage"] == stage]
        assert counts and [i for i, _ in counts] == list(range(1, counts[0][1] + 1))
    assert [e["n"] for e in events if e["stage"] == "sample"][0] == 4

    class Stop(Exception):
        pass

    def cancel(event):
        if event["stage"] == "sample" and event["i"] == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe.generate("cancel", duration=0.5, steps=6, seed=1, callback=cancel)
    assert pipe.generate("after", duration=0.25, steps=2, seed=1)[0].audio.shape == (2, 11025)


# ------------------------------------------------------------------------------------------- audio inputs


def test_inpainting_keeps_the_source_bit_identical_outside_the_regions(pipe):
    source = noise(1.0, seed=3)
    regions = [(0.1, 0.3), (0.55, 0.7)]
    (gen,) = pipe.generate("fix", duration=1.0, steps=3, seed=2, inpaint_audio=(SR, source),
                           mask_start=[s for s, _ in regions],
                           mask_end=[e for _, e in regions])
    inside = np.zeros(SR, dtype=bool)
    for s, e in regions:
        inside[int(s * SR) : int(e * SR)] = True
    np.testing.assert_array_equal(gen.audio[:, ~inside], source[:, ~inside])
    assert not np.allclose(gen.audio[:, inside], source[:, inside])
    assert gen.params["mode"] == "inpaint" and [list(r) for r in zip(gen.params["mask_start"], gen.params["mask_end"], strict=True)] == [list(r) for r in regions]
    (raw,) = pipe.generate("fix", duration=1.0, steps=3, seed=2, inpaint_audio=(SR, source),
                           mask_start=0.1, mask_end=0.3, splice=False)
    assert not np.array_equal(raw.audio[:, ~inside], source[:, ~inside])  # the raw model output, as officially


def test_any_rate_and_channel_count_is_accepted_and_kept_as_resampled(pipe):
    mono_48k = noise(0.5, seed=5, rate=48000, channels=1)
    (gen,) = pipe.generate("rate", duration=0.5, steps=2, seed=2, inpaint_audio=(48000, mono_48k),
                           mask_start=0.2, mask_end=0.3)
    kept = prepare(mono_48k, 48000, SR, 2)
    assert gen.audio.shape == (2, 22050)
    np.testing.assert_array_equal(gen.audio[:, : int(0.2 * SR)], kept[:, : int(0.2 * SR)])
    np.testing.assert_array_equal(gen.audio[:, int(0.3 * SR) :], kept[:, int(0.3 * SR) :])


def test_continuation_keeps_the_source_and_generates_the_rest_for_every_item(pipe):
    source = noise(0.5, seed=9)
    gens = pipe.generate("more", duration=1.2, steps=3, seed=2, batch_size=2, inpaint_audio=(SR, source),
                         mask_start=0.5, mask_end=1.2)
    for gen in gens:
        assert gen.audio.shape == (2, round(1.2 * SR)) and gen.params["mode"] == "extend"
        np.testing.assert_array_equal(gen.audio[:, : source.shape[1]], source)
        assert gen.audio[:, source.shape[1] :].any()
    assert not np.allclose(gens[0].audio, gens[1].audio)


def test_audio_to_audio_depends_on_the_noise_level_and_is_reproducible(pipe):
    source = noise(0.75, seed=11)
    runs = [pipe.generate("var", duration=0.75, steps=3, seed=5, init_audio=(SR, source), init_noise_level=level)[0]
            for level in (0.3, 0.3, 1.0)]
    np.testing.assert_array_equal(runs[0].audio, runs[1].audio)
    assert not np.allclose(runs[0].audio, runs[2].audio)
    assert runs[0].audio.shape == (2, round(0.75 * SR)) and runs[0].params["mode"] == "variation"
    plain = pipe.generate("var", duration=0.75, steps=3, seed=5)[0]
    assert not np.allclose(runs[0].audio, plain.audio)


# ------------------------------------------------------------------------------------------- long audio


def test_longer_than_the_model_maximum_is_chained_windows(short_pipe):
    events = []
    (gen,) = short_pipe.generate("long", duration=4.0, steps=2, seed=3, callback=events.append)
    assert gen.audio.shape == (2, 4 * SR) and gen.params["windows"] > 2
    sample = [e for e in events if e["stage"] == "sample"]
    assert [e["i"] for e in sample] == list(range(1, 2 * gen.params["windows"] + 1))
    assert all(e["n"] == 2 * gen.params["windows"] for e in sample)
    quarter = SR // 4
    assert all(np.abs(gen.audio[:, k : k + quarter]).max() > 0 for k in range(0, 4 * SR, quarter))
    (again,) = short_pipe.generate("long", duration=4.0, steps=2, seed=3)
    np.testing.assert_array_equal(gen.audio, again.audio)


def test_a_long_continuation_keeps_the_whole_source(short_pipe):
    source = noise(2.0, seed=4)  # longer than one window: only its end is context
    (gen,) = short_pipe.generate("on", duration=3.5, steps=2, seed=1, inpaint_audio=(SR, source),
                                 mask_start=2.0, mask_end=3.5)
    assert gen.audio.shape == (2, round(3.5 * SR)) and gen.params["windows"] >= 2
    np.testing.assert_array_equal(gen.audio[:, : 2 * SR], source)
    assert np.abs(gen.audio[:, 2 * SR :]).max() > 0


# ------------------------------------------------------------------------------------------- base models


def test_base_models_guide_with_negative_prompts_and_other_samplers(base_pipe):
    assert (base_pipe.default_steps, base_pipe.default_cfg_scale, base_pipe.is_base) == (50, 7.0, True)
    plain = base_pipe.generate("base", duration=0.5, steps=3, seed=1)[0]
    negative = base_pipe.generate("base", negative_prompt="noise", duration=0.5, steps=3, seed=1)[0]
    dpmpp = base_pipe.generate("base", duration=0.5, steps=3, seed=1, sampler="dpmpp")[0]
    unguided = base_pipe.generate("base", negative_prompt="noise", duration=0.5, steps=3, seed=1, cfg_scale=1)[0]
    unguided_plain = base_pipe.generate("base", duration=0.5, steps=3, seed=1, cfg_scale=1)[0]
    assert plain.params["sampler"] == "euler" and plain.params["cfg_scale"] == 7.0
    assert not np.allclose(plain.audio, negative.audio) and not np.allclose(plain.audio, dpmpp.audio)
    np.testing.assert_array_equal(unguided.audio, unguided_plain.audio)  # no guidance: the negative is unused


def test_guidance_options_reach_the_sampler_and_are_reported(base_pipe):
    kwargs = dict(prompt="base", duration=0.5, steps=3, seed=1)
    apg = base_pipe.generate(**kwargs)[0]
    vanilla = base_pipe.generate(**kwargs, apg_scale=0.0)[0]
    capped = base_pipe.generate(**kwargs, apg_scale=0.0, cfg_norm_threshold=1e-3)[0]
    # guidance only for t in [0, 0]: never at a sampler step, so the result is the unguided one
    outside = base_pipe.generate(**kwargs, cfg_interval=(0.0, 0.0))[0]
    unguided = base_pipe.generate(**kwargs, cfg_scale=1.0)[0]
    assert not np.allclose(apg.audio, vanilla.audio) and not np.allclose(vanilla.audio, capped.audio)
    np.testing.assert_array_equal(outside.audio, unguided.audio)
    assert (capped.params["apg_scale"], capped.params["cfg_norm_threshold"]) == (0.0, 1e-3)
    assert outside.params["cfg_interval"] == [0.0, 0.0] and apg.params["cfg_interval"] == [0.0, 1.0]


# ------------------------------------------------------------------------------------------- precision, memory


def test_a_bfloat16_pipeline_keeps_the_autoencoder_and_the_sampler_state_float32():
    pipe = Pipeline.load("tiny-random", dtype="bfloat16", autoencoder_dtype="float32")
    assert pipe.dtype == torch.bfloat16 and pipe.model.autoencoder.dtype == torch.float32
    assert Pipeline.load("tiny-random", dtype="bfloat16", autoencoder_dtype="bf16").model.autoencoder.dtype == (
        torch.bfloat16)
    text = (torch.zeros(1, 256, 768), torch.ones(1, 256))
    window = Window(text=text, seconds=[1.0], steps=2, source=noise(1.0), regions=[(SR // 2, SR)])
    sampled = pipe.sample_window(window, SeededNoise.from_seeds([1], pipe.geometry.own_frames([1.0])))
    assert sampled.latents.dtype == sampled.source_latents.dtype == torch.float32
    (audio,) = pipe.decode_items(sampled, [1.0])
    assert audio.dtype == np.float32 and np.isfinite(audio).all()


def test_long_windows_are_always_decoded_in_chunks(tmp_path_factory):
    """Bounded memory: whatever the config's pretransform.chunked (official default False); parity keeps it."""
    pipe = Pipeline.load(model_folder(tmp_path_factory, "unchunked", chunked=False))
    assert pipe.chunked and not Pipeline(pipe.model, chunked=False).chunked
    events = []
    pipe.generate("long", duration=14.0, steps=1, seed=1, callback=events.append)
    frames = pipe.decoded_frames([14.0])[0]
    assert frames > CODEC_CHUNK
    decode = [e for e in events if e["stage"] == "decode"]
    assert decode[-1]["i"] == decode[-1]["n"] == len(chunk_starts(frames, CODEC_CHUNK, CODEC_CHUNK - CODEC_OVERLAP))


def test_chunked_decoding_stops_past_the_duration_and_changes_no_sample_within_it(pipe, tmp_path_factory):
    """A window carries 6 s of padding past the duration: chunked, only DECODE_CONTEXT frames of it are decoded
    (whole chunks, so the decoder's chunks fall where they fall in the whole window); unchunked (parity),
    the whole window is, as officially."""
    unchunked = Pipeline.load(model_folder(tmp_path_factory, "whole", chunked=False))
    unchunked = Pipeline(unchunked.model, chunked=False, text_encoder=unchunked.text_encoder)
    text = (torch.zeros(1, 256, 768), torch.ones(1, 256))
    for seconds in (3.0, 14.0):  # one decoder call; two chunks
        own = pipe.geometry.own_frames([seconds])[0]
        decoded = pipe.decoded_frames([seconds])[0]
        assert decoded < own and unchunked.decoded_frames([seconds]) == [own]
        assert decoded >= pipe.geometry.effective_frames([seconds])[0] + DECODE_CONTEXT
        window = Window(text=text, seconds=[seconds], steps=1)
        sampled = pipe.sample_window(window, SeededNoise.from_seeds([2], [own]))
        (trimmed,) = pipe.decode_items(sampled, [seconds])
        with torch.no_grad():  # the whole window, decoded in chunks as before
            whole = codec_decode(pipe.model.autoencoder, sampled.latents, True)[0].clamp(-1, 1)
        np.testing.assert_allclose(trimmed, whole[:, : round(seconds * SR)].numpy(), atol=1e-6)


# ------------------------------------------------------------------------------------------- LoRA


def write_lora(path, pipe: Pipeline, seed: int, layers=("model.transformer.layers.0.self_attn.to_qkv",
                                                       "conditioners.seconds_total.embedder.embedding.1")):
    g = torch.Generator().manual_seed(seed)
    modules = {**dict(pipe.model.model.named_modules()),
               **dict(pipe.model.conditioner.named_modules())}
    tensors = {}
    for name in layers:
        fan_out, fan_in = modules[name].weight.shape
        tensors[f"{name}.parametrizations.weight.0.lora_A"] = torch.randn(2, fan_in, generator=g).half()
        tensors[f"{name}.parametrizations.weight.0.lora_B"] = torch.randn(fan_out, 2, generator=g).half()
    save_file(tensors, str(path), metadata={"lora_config": json.dumps({"rank": 2, "alpha": 2, "adapter_type": "lora"})})
    return path


def test_loras_stack_change_strength_without_reloading_and_unload(pipe, tmp_path):
    a, b = write_lora(tmp_path / "a.safetensors", pipe, 1), write_lora(tmp_path / "b.safetensors", pipe, 2)

    def run(loras):
        return pipe.generate("lora", duration=0.25, steps=2, seed=9, loras=loras)[0]

    base = run(None)
    strong = run([(str(a), 1.0)])
    (handle,) = loaded_loras(pipe.model)
    zero = run([(str(a), 0.0)])
    assert loaded_loras(pipe.model) == [handle] and handle.strength == 0.0  # same adapter, new strength
    np.testing.assert_array_equal(zero.audio, base.audio)
    assert not np.allclose(strong.audio, base.audio) and strong.params["loras"] == [[str(a), 1.0]]
    both = run([(str(a), 1.0), (str(b), 0.5)])
    assert [lora.name for lora in loaded_loras(pipe.model)] == ["a", "b"] and loaded_loras(pipe.model)[0] is handle
    assert not np.allclose(both.audio, strong.audio)
    only_b = run([(str(b), 0.5)])
    assert [lora.name for lora in loaded_loras(pipe.model)] == ["b"]
    assert not np.allclose(only_b.audio, both.audio)
    np.testing.assert_array_equal(run([]).audio, base.audio)
    assert loaded_loras(pipe.model) == []


# ------------------------------------------------------------------------------------------- bad input


SOURCE = (SR, noise(1.0, seed=1))
BAD = [
    (dict(duration=-1.0), "duration"),
    (dict(duration=float("nan")), "duration"),
    (dict(steps=0), "steps"),
    (dict(seed="x"), "seed"),
    (dict(batch_size=0), "batch_size"),
    (dict(prompt=["a", "b"], seed=[1, 2, 3]), "seed"),
    (dict(prompt=3), "prompt"),
    (dict(cfg_scale=float("inf")), "cfg_scale"),
    (dict(sampler="ddim"), "sampler"),
    (dict(padding_mode="none"), "padding_mode"),
    (dict(init_audio=(SR, np.full((2, 100), np.nan, np.float32))), "init_audio"),
    (dict(init_audio=(SR, np.zeros((2, 0), np.float32))), "init_audio"),
    (dict(init_audio=SOURCE, init_noise_level=0.0), "init_noise_level"),
    (dict(init_audio=SOURCE, duration=0.5), "init_audio"),
    (dict(inpaint_audio=(0, SOURCE[1]), mask_start=0.1, mask_end=0.2),
     "inpaint_audio sample rate"),
    (dict(inpaint_audio=SOURCE, mask_start=0.5, mask_end=0.2, duration=1.0),
     "mask_end"),
    (dict(inpaint_audio=SOURCE, mask_start=[0.1, 0.2], mask_end=[0.3, 0.4],
          duration=1.0), "mask_start"),
    (dict(inpaint_audio=SOURCE, mask_start=1.5, mask_end=1.8, duration=2.0),
     "mask_start"),
    (dict(inpaint_audio=SOURCE, mask_start=0.5, mask_end=1.5, duration=1.0),
     "mask_end"),
    (dict(inpaint_audio=SOURCE, mask_start=0.5, duration=1.0), "mask_end"),
    (dict(inpaint_audio=SOURCE, duration=1.0), "mask_start"),
    (dict(mask_start=0.1, mask_end=0.2), "inpaint_audio"),
    (dict(inpaint_audio=SOURCE, mask_start=0.1, mask_end=0.2, duration=0.5),
     "inpaint_audio"),
    (dict(inpaint_audio=SOURCE, mask_start=0.1, mask_end=0.2, duration=2.0),
     "duration"),
    (dict(loras=[("/no/such/adapter.safetensors", 1.0)]), "loras[0]"),
    (dict(loras=["adapter"]), "loras[0]"),
    (dict(apg_scale=float("nan")), "apg_scale"),
    (dict(cfg_interval=(0.5, 0.2)), "cfg_interval"),
    (dict(cfg_interval=0.5), "cfg_interval"),
    (dict(cfg_interval=(-0.1, 1.0)), "cfg_interval"),
    (dict(cfg_norm_threshold=-1.0), "cfg_norm_threshold"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_raises_a_value_error_naming_the_field(pipe, kwargs, field):
    with pytest.raises(ValueError) as err:
        pipe.generate(**{"duration": 1.0, **kwargs})
    assert str(err.value).startswith(field), str(err.value)


def test_audio_to_audio_is_limited_to_one_window(short_pipe):
    with pytest.raises(ValueError, match="^duration"):
        short_pipe.generate("x", duration=3.0, init_audio=(SR, noise(3.0)))


def test_duration_and_source_length_are_capped_before_anything_is_allocated(pipe, monkeypatch):
    with pytest.raises(ValueError, match=r"^duration: 1e\+07 s is longer than the limit of 1800 s"):
        pipe.generate("x", duration=1e7)  # once a MemoryError
    monkeypatch.setattr(pipe, "max_duration_seconds", 0.5)
    monkeypatch.setattr(pipe, "max_input_seconds", 0.25)
    with pytest.raises(ValueError, match=r"^duration: 0\.75 s is longer than the limit of 0\.5 s"):
        pipe.generate("x", duration=[0.25, 0.75])
    with pytest.raises(ValueError, match=r"^init_audio: 0\.3 s is longer than the limit of 0\.25 s"):
        pipe.generate("x", duration=0.5, init_audio=(SR, noise(0.3)))
    with pytest.raises(ValueError, match=r"^inpaint_audio: 0\.3 s is longer than the limit of 0\.25 s"):
        pipe.inpaint(noise(0.3), SR, [(0.1, 0.2)])
    with pytest.raises(ValueError, match="^max_input_seconds"):
        Pipeline(pipe.model, max_input_seconds=0)


# ------------------------------------------------------------------------------------------- mode methods


def test_mode_methods_are_generate_with_the_source_mapped(pipe):
    source = noise(0.5, seed=6)
    common = dict(steps=2, seed=4, splice=True)
    (inpainted,) = pipe.inpaint(source, SR, [(0.1, 0.2), (0.3, 0.35)], "fix", **common)
    (expected,) = pipe.generate("fix", duration=0.5, inpaint_audio=(SR, source),
                                mask_start=[0.1, 0.3], mask_end=[0.2, 0.35], **common)
    np.testing.assert_array_equal(inpainted.audio, expected.audio)
    assert inpainted.params == expected.params and inpainted.params["mode"] == "inpaint"

    (extended,) = pipe.extend(source, SR, 0.8, "more", **common)
    (expected,) = pipe.generate("more", duration=0.8, inpaint_audio=(SR, source), mask_start=0.5,
                                mask_end=0.8, **common)
    np.testing.assert_array_equal(extended.audio, expected.audio)
    assert extended.audio.shape == (2, round(0.8 * SR)) and extended.params["mode"] == "extend"

    (varied,) = pipe.variation(source, SR, "var", init_noise_level=0.4, steps=2, seed=4)
    (expected,) = pipe.generate("var", duration=0.5, init_audio=(SR, source), init_noise_level=0.4, steps=2, seed=4)
    np.testing.assert_array_equal(varied.audio, expected.audio)
    assert varied.params["init_noise_level"] == 0.4 and varied.params["mode"] == "variation"


@pytest.mark.parametrize(("call", "field"), [
    (lambda p, a: p.extend(a, SR, 0.5), "duration"),  # the total length, not the seconds added
    (lambda p, a: p.extend(a, SR, float("nan")), "duration"),
    (lambda p, a: p.extend(a[:, :0], SR, 1.0), "inpaint_audio"),
    (lambda p, a: p.inpaint(a, SR, []), "regions"),
    (lambda p, a: p.inpaint(a, SR, [0.1, 0.2]), "regions"),
    (lambda p, a: p.inpaint(a, SR, [(0.3, 0.1)]), "mask_end"),
    (lambda p, a: p.inpaint(a, 0, [(0.1, 0.2)]), "inpaint_audio sample rate"),
    (lambda p, a: p.variation(a, SR, init_noise_level=1.5), "init_noise_level"),
    (lambda p, a: p.variation(a, SR, duration=0.25), "init_audio"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_mode_methods_name_the_bad_field(pipe, call, field):
    with pytest.raises(ValueError) as err:
        call(pipe, noise(0.5, seed=2))
    assert str(err.value).startswith(field), str(err.value)
