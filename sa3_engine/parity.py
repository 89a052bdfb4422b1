"""``sa3 parity DIR``: run our implementation on the official test vectors and compare.

A case folder holds ``config.json``, ``weights.safetensors``, ``inputs.safetensors``,
``outputs.safetensors`` and ``case.json`` (see shared/parity/README.md). Every size is read from
those files. A handler turns (config, weights, inputs) into named tensors; it never sees the
expected outputs. Each expected tensor is compared with numpy ``allclose`` semantics using the
case's strict tolerance; an unknown case, a handler error or a missing output is a failure.
"""

from __future__ import annotations

import fnmatch
import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

DEFAULT_TOLERANCE = (1e-4, 1e-4)


@dataclass
class Case:
    path: Path
    name: str
    config: dict
    meta: dict  # case.json
    inputs: dict[str, torch.Tensor]

    @property
    def weights(self) -> Path:
        return self.path / "weights.safetensors"

    @property
    def args(self) -> dict:
        return self.meta.get("non_tensor_args", {})


@dataclass
class Masked:
    """An output to compare only where ``valid`` (broadcastable bool) is True."""

    value: torch.Tensor
    valid: torch.Tensor


Handler = Callable[[Case], dict[str, "torch.Tensor | Masked"]]


def _dit_parts(case: Case):
    """The case's DiT, conditioner heads and conditioning layout, loaded strictly from its weights."""
    from sa3_engine.models.checkpoint import load_weights
    from sa3_engine.models.conditioners import Conditioner, ConditioningLayout
    from sa3_engine.models.config import conditioning_config, diffusion_block, dit_config
    from sa3_engine.models.dit import DiffusionTransformer

    with torch.device("meta"):
        dit = DiffusionTransformer.from_config(dit_config(case.config))
        conditioner = Conditioner.from_config(conditioning_config(case.config))
    load_weights(dit, case.weights, prefix="model.model.")
    load_weights(conditioner, case.weights, prefix="conditioner.")
    return dit, conditioner, ConditioningLayout.from_config(diffusion_block(case.config))


def _conditioning(case: Case, conditioner, layout):
    """The case-01 conditioning as a function (re-run after adapters change the duration head).

    Number heads run on the case's raw inputs; prompt heads' outputs are given as ``<id>_embeds`` /
    ``<id>_mask`` (the T5 stand-in ran before them); other ids are passed through.
    """
    from sa3_engine.models.conditioners import TextConditioner

    inputs = case.inputs
    ids = {*layout.cross_attention_ids, *layout.global_ids, *layout.local_add_ids}
    heads = {i: conditioner.conditioners[i] for i in ids if i in conditioner.conditioners}
    given = {i: (inputs[f"{i}_embeds"], inputs[f"{i}_mask"]) for i, h in heads.items() if isinstance(h, TextConditioner)}
    passed = {i: inputs[i] for i in ids - set(heads)}

    def condition():
        conditioned = conditioner({i: inputs[i] for i in heads if i not in given})
        return layout.assemble({**passed, **given, **conditioned}), conditioned

    return condition


def _dit_args(case: Case, cond) -> tuple:
    inputs = case.inputs
    return (inputs["x"], inputs["t"], cond.cross_attn_cond, cond.global_cond, cond.local_add_cond, inputs["padding_mask"])


def _dit_forward(case: Case):
    """One DiT forward: the official CPU path (V-zeroing) strictly, true masking against the flash output."""
    dit, conditioner, layout = _dit_parts(case)
    cond, conditioned = _conditioning(case, conditioner, layout)()
    args = _dit_args(case, cond)
    v, hidden = dit(*args, padding_mode="vzero", return_hidden=True)
    v_masked = dit(*args, padding_mode="mask")
    return {
        "seconds_embedding": conditioned["seconds_total"][0],
        "cross_attn_cond": cond.cross_attn_cond,
        "global_cond": cond.global_cond,
        "local_add_cond": cond.local_add_cond,
        "v": v,
        "hidden_states": hidden,
        "v_flash_emulated": Masked(v_masked, case.inputs["padding_mask"][:, None, :]),
    }


def _autoencoder(case: Case):
    """Cases 03/04: pad to the downsampling ratio, then plain and chunked encode/decode."""
    from sa3_engine.models.same import SAMEAutoencoder, pad_to_multiple

    model = SAMEAutoencoder.from_config(case.config).eval()
    model.load_state_dict(load_file(str(case.weights)), strict=True)
    audio = pad_to_multiple(case.inputs["audio"], model.downsampling_ratio)
    chunking = {"chunk_size": case.args.get("chunk_size", 128), "overlap": case.args.get("overlap", 32)}
    latents = model.encode(audio)
    return {
        "encoder_out_pre_bottleneck": model.encoder(model.patcher.encode(audio)),
        "latents": latents,
        "decoded": model.decode(latents),
        "latents_chunked": model.encode_chunked(audio, **chunking),
        "decoded_chunked": model.decode_chunked(latents, **chunking),
    }


def _embeddings(case: Case):
    """Fourier table and features, timestep MLP, duration head, prompt head, conditioning assembly."""
    from dataclasses import replace

    from sa3_engine.models.fourier import expo_fourier_features, expo_freqs, logsnr_timestep

    dit, conditioner, layout = _dit_parts(case)
    inputs = case.inputs
    t, seconds = inputs["t"], inputs["seconds"]
    seconds_head, prompt_head = conditioner.conditioners["seconds_total"], conditioner.conditioners["prompt"]
    timestep_fourier = expo_fourier_features(t, dit.timestep_features_dim)
    seconds_normalized = seconds_head.normalize(seconds)
    prompt_embeds, prompt_mask = prompt_head(inputs["t5_last_hidden_state"], inputs["prompt_attention_mask"])
    pair = conditioner({"seconds_total": inputs["seconds_total_pair"]})
    # Only the cross/global inputs are built here; no local-add tensors exist in this case.
    cond = replace(layout, local_add_ids=()).assemble({**pair, "prompt": (prompt_embeds, prompt_mask)})
    return {
        "expo_freqs": expo_freqs(dit.timestep_features_dim // 2),
        "timestep_fourier": timestep_fourier,
        "timestep_embed": dit.to_timestep_embed(timestep_fourier),
        "timestep_logsnr_cond": logsnr_timestep(t),
        "seconds_normalized": seconds_normalized,
        "seconds_fourier": seconds_head.embedder.embedding[0](seconds_normalized),
        "seconds_embedding": seconds_head(seconds)[0],
        "prompt_embeds": prompt_embeds,
        "prompt_mask_out": prompt_mask.to(torch.uint8),
        "cross_attn_cond": cond.cross_attn_cond,
        "global_cond": cond.global_cond,
    }


class _RecordedNoise:
    """The official run's recorded draws (``initial_noise``, ``step_noise``) in place of seeded ones."""

    def __init__(self, inputs: dict[str, torch.Tensor]):
        self.first, self.steps = inputs["initial_noise"], inputs.get("step_noise")

    def initial(self, shape: tuple[int, ...]) -> torch.Tensor:
        if tuple(self.first.shape) != tuple(shape):
            raise ValueError(f"initial_noise is {tuple(self.first.shape)}, the window is {tuple(shape)}")
        return self.first

    def __call__(self, step: int, like: torch.Tensor) -> torch.Tensor:
        return self.steps[step].to(device=like.device, dtype=like.dtype)


class _StepTrace:
    """Collects the sampler state, denoised estimate and t of every step (the official callback's view)."""

    def __init__(self):
        self.x, self.denoised, self.t = [], [], []

    def __call__(self, info: dict) -> None:
        self.x.append(info["x"])
        self.denoised.append(info["denoised"])
        self.t.append(info["t"])


def _seconds(values: torch.Tensor) -> list[float]:
    """float32 durations back to the decimals the official call was given (3.3, not 3.2999999523)."""
    import numpy as np

    return [float(str(np.float32(v))) for v in values.tolist()]


def _generation(case: Case):
    """The case's full model as a pipeline without text encoder, and the window inputs every case shares.

    The length cap is the official call's ``sample_size`` argument (its default unless the case gives one),
    not the config's, and so is the padding past the duration (``duration_padding_sec``); the text is the
    T5 stand-in's output.
    """
    from dataclasses import replace

    from sa3_engine.generation.geometry import DURATION_PADDING_SECONDS, OFFICIAL_SAMPLE_SIZE
    from sa3_engine.generation.pipeline import Pipeline
    from sa3_engine.generation.window import Window
    from sa3_engine.models.sa3 import SA3Model

    # chunked=False: encode and decode chunked only when the config says so, as the official pretransform
    pipe = Pipeline(SA3Model.from_pretrained(case.weights, config=case.config), chunked=False)
    pipe.geometry = replace(
        pipe.geometry,
        max_samples=int(case.args.get("sample_size", OFFICIAL_SAMPLE_SIZE)),
        padding_seconds=float(case.args.get("duration_padding_sec", DURATION_PADDING_SECONDS)),
    )
    inputs = case.inputs
    window = Window(
        text=(inputs["t5_last_hidden_state"], inputs["prompt_attention_mask"]),
        seconds=_seconds(inputs["seconds_total"]),
        steps=int(case.args["steps"]),
        sampler=pipe.default_sampler,
        cfg_scale=float(case.args.get("cfg_scale", 1.0)),
        padding_mode="vzero",  # the official CPU attention path the vectors were made with
    )
    return pipe, window


def _window_outputs(sampled) -> dict[str, torch.Tensor]:
    return {
        "sigmas": sampled.sigmas,
        "padding_mask": sampled.padding_mask,
        "cross_attn_cond": sampled.cond.cross_attn_cond,
        "global_cond": sampled.cond.global_cond,
        "local_add_cond": sampled.cond.local_add_cond,
        "final_latent": sampled.latents,
    }


def _pingpong_generate(case: Case):
    """Case 05: text to audio, batch of mixed durations, the model's default sampler (ping-pong)."""
    pipe, window = _generation(case)
    trace = _StepTrace()
    sampled = pipe.sample_window(window, _RecordedNoise(case.inputs), on_step=trace)
    return {**_window_outputs(sampled), "x_per_step": torch.stack(trace.x),
            "denoised_per_step": torch.stack(trace.denoised)}


def _base_cfg_generate(case: Case):
    """Case 06: a base model with CFG: APG with the zero context, with a negative prompt, plain CFG, DPM++."""
    from dataclasses import replace

    pipe, window = _generation(case)
    inputs = case.inputs
    noise = _RecordedNoise(inputs)
    negative_text = (inputs["negative_t5_last_hidden_state"], inputs["negative_prompt_attention_mask"])
    apg = float(case.args.get("apg_scale", 1.0))
    window = replace(window, apg_scale=apg)
    trace = _StepTrace()
    null = pipe.sample_window(window, noise, on_step=trace)
    negative = pipe.sample_window(replace(window, negative_text=negative_text), noise)
    return {
        **_window_outputs(null),
        "x_per_step_euler_null": torch.stack(trace.x),
        "latent_euler_cfg_null": null.latents,
        "latent_euler_cfg_negative": negative.latents,
        "negative_cross_attn_cond": negative.negative.cross_attn_cond,
        "negative_cross_attn_mask": negative.negative.cross_attn_mask.to(torch.uint8),
        "latent_euler_cfg_vanilla": pipe.sample_window(replace(window, apg_scale=0.0), noise).latents,
        "latent_dpmpp_cfg_null": pipe.sample_window(replace(window, sampler="dpmpp"), noise).latents,
    }


def _inpaint_generate(case: Case):
    """Case 07: inpainting a source over second ranges (official mask), no splice, default sampler."""
    from dataclasses import replace

    from sa3_engine.audio import prepare
    from sa3_engine.generation.geometry import regions_to_samples

    pipe, window = _generation(case)
    args = case.args
    rate = int(args.get("sample_rate", pipe.sample_rate))
    source = prepare(case.inputs["inpaint_audio"], rate, pipe.sample_rate, pipe.channels, field="inpaint_audio")
    regions = regions_to_samples(args["inpaint_mask_start_seconds"], args["inpaint_mask_end_seconds"],
                                 pipe.sample_rate)
    trace = _StepTrace()
    sampled = pipe.sample_window(replace(window, source=source, regions=regions), _RecordedNoise(case.inputs),
                                 on_step=trace)
    return {
        **_window_outputs(sampled),
        "inpaint_latent": sampled.source_latents,
        "inpaint_mask": sampled.inpaint_mask,
        "inpaint_masked_input": sampled.masked_input,
        "sigmas_used": torch.stack(trace.t, dim=1),
    }


def _lora(case: Case):
    """Case 08: each adapter file on the DiT wrapper + conditioner at each strength, then the case-01 call.

    Outputs ``v_base`` and ``v_<file stem>_s<strength>`` / ``seconds_embedding_<file stem>_s<strength>``
    with the strength written as in case.json's names (0.7 -> "0p7", 1.0 -> "1").
    """
    from sa3_engine.models.lora import load_lora, set_lora_strength, unload_lora
    from sa3_engine.models.sa3 import DiTWrapper

    dit, conditioner, layout = _dit_parts(case)
    target = (DiTWrapper(dit), conditioner)  # the module names adapter keys are relative to
    condition = _conditioning(case, conditioner, layout)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        cond, conditioned = condition()
        return dit(*_dit_args(case, cond), padding_mode="vzero"), conditioned["seconds_total"][0]

    out = {"v_base": call()[0]}
    for file_name in (k for k in case.args if k.endswith(".safetensors")):
        lora = load_lora(target, case.path / file_name)
        for strength in case.args["strengths"]:
            set_lora_strength(target, lora, strength)
            tag = f"{Path(file_name).stem}_s{float(strength):g}".replace(".", "p")
            out[f"v_{tag}"], out[f"seconds_embedding_{tag}"] = call()
        unload_lora(target, lora)
    return out


# (pattern over the folder name, then over the component text, handler); first match wins.
HANDLERS: list[tuple[str, Handler]] = [
    (r"lora", _lora),
    (r"inpaint", _inpaint_generate),
    (r"base|cfg", _base_cfg_generate),
    (r"ping.?pong", _pingpong_generate),
    (r"autoencoder|same", _autoencoder),
    (r"embedding", _embeddings),
    (r"dit.*forward|forward.*dit", _dit_forward),
]


def find_handler(case: Case) -> Handler | None:
    """The folder name decides; the component text is the fallback (it mentions other cases' words)."""
    for text in (case.name.lower(), str(case.meta.get("component", "")).lower()):
        for pattern, handler in HANDLERS:
            if re.search(pattern, text):
                return handler
    return None


# Keys that name a kind of output rather than tensors (case 06: "latents", "conditioning tensors"), with
# the outputs of that kind (README "Tolerances and why": generated latents, conditioning tensors).
KIND_KEYS: dict[str, Callable[[str], bool]] = {
    "latents": lambda name: "latent" in name.split("_") or name.startswith(("x_per_step", "denoised_per_step")),
    "conditioning tensors": lambda name: name.endswith("_cond") or name.startswith("negative_cross_attn"),
}


def tolerance_for(name: str, spec: dict) -> tuple[float, float]:
    """(atol, rtol) for one output tensor from a case's ``suggested_tolerance`` (strict entries only).

    A key naming the tensor wins, then a glob key, then a key naming its kind, then "other(s)".
    """
    strict = {k: v for k, v in spec.items() if not k.startswith("relaxed")}

    def parse(value) -> tuple[float, float]:
        if isinstance(value, str):  # "exact", "bit-exact (atol 0)"
            return (0.0, 0.0)
        return (float(value.get("atol", 0.0)), float(value.get("rtol", 0.0)))

    for key, value in strict.items():
        if name in key.split("/"):
            return parse(value)
    for key, value in strict.items():
        if any("*" in k and fnmatch.fnmatch(name, k) for k in key.split("/")):
            return parse(value)
    for key, value in strict.items():
        if key in KIND_KEYS and KIND_KEYS[key](name):
            return parse(value)
    for fallback in ("others", "other"):
        if fallback in strict:
            return parse(strict[fallback])
    return DEFAULT_TOLERANCE


def load_case(path: Path) -> Case:
    return Case(
        path=path,
        name=path.name,
        config=json.loads((path / "config.json").read_text()),
        meta=json.loads((path / "case.json").read_text()),
        inputs=load_file(str(path / "inputs.safetensors")),
    )


def case_dirs(root: Path) -> list[Path]:
    if (root / "case.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/case.json"))
    if not found:
        raise FileNotFoundError(f"no parity case (a folder with case.json) in {root}")
    return found


@dataclass
class Row:
    case: str
    tensor: str
    error: float | None
    atol: float
    rtol: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        err = "-" if self.error is None else f"{self.error:.3e}"
        tol = f"atol={self.atol:g} rtol={self.rtol:g}"
        status = "ok" if self.ok else "FAIL"
        return f"{self.case:<28} {self.tensor:<34} max_abs_err={err:<10} {tol:<26} {status}" + (
            f"  ({self.note})" if self.note else ""
        )


def compare(case_name: str, name: str, ours, expected: torch.Tensor, atol: float, rtol: float) -> Row:
    valid = None
    if isinstance(ours, Masked):
        ours, valid = ours.value, ours.valid
    ours = ours.detach().to("cpu")
    if tuple(ours.shape) != tuple(expected.shape):
        return Row(case_name, name, None, atol, rtol, False, f"shape {tuple(ours.shape)} != {tuple(expected.shape)}")
    a, b = ours.to(torch.float64), expected.to(torch.float64)
    diff = (a - b).abs()
    bound = atol + rtol * b.abs()
    if valid is not None:
        valid = valid.to("cpu").expand_as(diff)
        diff, bound = diff[valid], bound[valid]
    if diff.numel() == 0:
        return Row(case_name, name, 0.0, atol, rtol, True)
    bad = ~(diff <= bound)  # NaN counts as a failure
    return Row(case_name, name, float(diff.max()), atol, rtol, not bool(bad.any()))


def run_case(path: Path) -> list[Row]:
    try:
        case = load_case(path)
    except Exception as exc:  # noqa: BLE001 - a broken folder is a failure, not a crash
        return [Row(path.name, "-", None, 0, 0, False, f"cannot read case: {exc}")]
    handler = find_handler(case)
    if handler is None:
        return [Row(case.name, "-", None, 0, 0, False, "unknown case kind")]
    expected = load_file(str(path / "outputs.safetensors"))
    spec = case.meta.get("suggested_tolerance", {})
    try:
        with torch.no_grad():
            ours = handler(case)
    except Exception as exc:  # noqa: BLE001
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return [Row(case.name, "-", None, 0, 0, False, detail)]
    rows = []
    for name, ref in expected.items():
        atol, rtol = tolerance_for(name, spec)
        if name not in ours:
            rows.append(Row(case.name, name, None, atol, rtol, False, "not produced"))
        else:
            rows.append(compare(case.name, name, ours[name], ref, atol, rtol))
    return rows
