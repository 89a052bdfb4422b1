"""The DiT at sizes other than the shipped ones, against a plain float64 re-derivation of the README.

The parity vectors fix one tiny size; these tests vary widths, head sizes (partial and full RoPE),
memory-token counts and depth, so nothing may silently depend on the shipped numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sa3_engine.models.config import ConfigError
from sa3_engine.models.dit import DiffusionTransformer
from sa3_engine.models.fourier import expo_fourier_features


def tiny_config(**overrides) -> dict:
    """An official-format ``model.diffusion.config`` with small, unusual sizes."""
    config = {
        "io_channels": 6,
        "patch_size": 1,
        "embed_dim": 96,
        "depth": 3,
        "num_heads": 2,
        "cond_token_dim": 20,
        "project_cond_tokens": True,
        "global_cond_dim": 20,
        "project_global_cond": True,
        "transformer_type": "continuous_transformer",
        "global_cond_type": "adaLN",
        "timestep_cond_type": "global",
        "timestep_features_type": "expo",
        "timestep_features_dim": 32,
        "timestep_features_logsnr": False,
        "local_add_cond_dim": 7,
        "num_memory_tokens": 5,
        "norm_type": "rms_norm",
        "attn_kwargs": {"qk_norm": "rms", "differential": False},
        "ff_kwargs": {"mult": 3},
    }
    config.update(overrides)
    return config


def random_dit(config: dict, seed: int = 0) -> DiffusionTransformer:
    torch.manual_seed(seed)
    dit = DiffusionTransformer.from_config(config)
    with torch.no_grad():  # non-trivial everywhere (gammas, biases, zero-initialised outputs) but tame
        for p in dit.parameters():
            p.normal_(0.0, 0.3 if p.dim() == 1 else p[0].numel() ** -0.5)
    return dit.eval()


def random_inputs(config: dict, lengths: list[int], frames: int, context: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    b, c = len(lengths), config["io_channels"]
    return dict(
        x=torch.randn(b, c, frames, generator=g),
        t=torch.rand(b, generator=g),
        cross_attn_cond=torch.randn(b, context, config["cond_token_dim"], generator=g),
        global_cond=torch.randn(b, config["global_cond_dim"], generator=g),
        local_add_cond=torch.randn(b, config["local_add_cond_dim"], frames, generator=g),
        padding_mask=torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None],
    )


def reference_forward(dit: DiffusionTransformer, config: dict, inputs: dict, padding_mode: str) -> torch.Tensor:
    """The README's DiT description, written out naively in float64 from the state dict."""
    sd = {k: v.double() for k, v in dit.state_dict().items()}
    heads, dim = config["num_heads"], config["embed_dim"]
    head_dim, memory = dim // heads, config["num_memory_tokens"]
    differential = config["attn_kwargs"]["differential"]

    def linear(x, name):
        out = x @ sd[name + ".weight"].T
        return out + sd[name + ".bias"] if name + ".bias" in sd else out

    def mlp(x, name):
        return linear(F.silu(linear(x, name + ".0")), name + ".2")

    def rms(x, gamma, eps):
        return gamma * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def rope(x):  # rotate the first 2*len(inv_freq) dims of each head, half-split pairs (i, i + half)
        inv_freq = sd["transformer.rotary_pos_emb.inv_freq"]
        half = inv_freq.shape[0]
        angle = torch.arange(x.shape[-2], dtype=torch.float64)[:, None] * inv_freq[None, :]
        a, b, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
        return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin(), rest], -1)

    def heads_of(x):
        return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    def softmax_attention(q, k, v, key_mask):
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return scores.softmax(-1) @ v

    def attention(x, name, context, layer_rope, key_mask):
        if context is None:
            parts = linear(x, name + ".to_qkv").chunk(5 if differential else 3, -1)
            qs, ks, v = ((parts[0], parts[3]), (parts[1], parts[4]), parts[2]) if differential else (
                (parts[0],), (parts[1],), parts[2])
        else:
            qs = linear(x, name + ".to_q").chunk(2 if differential else 1, -1)
            kv = linear(context, name + ".to_kv").chunk(3 if differential else 2, -1)
            ks, v = kv[:-1], kv[-1]
        qs = [rms(heads_of(q), sd[name + ".q_norm.gamma"], 1e-6) for q in qs]
        ks = [rms(heads_of(k), sd[name + ".k_norm.gamma"], 1e-6) for k in ks]
        v = heads_of(v)
        if layer_rope:
            qs, ks = [rope(q) for q in qs], [rope(k) for k in ks]
        if padding_mode == "vzero" and key_mask is not None:
            v, key_mask = v * key_mask[:, None, :, None], None
        out = softmax_attention(qs[0], ks[0], v, key_mask)
        if differential:
            out = out - softmax_attention(qs[1], ks[1], v, key_mask)
        return linear(out.transpose(1, 2).reshape(x.shape), name + ".to_out")

    x, t = inputs["x"].double(), inputs["t"]
    batch = x.shape[0]
    context = mlp(inputs["cross_attn_cond"].double(), "to_cond_embed")
    features = expo_fourier_features(t, config["timestep_features_dim"]).double()
    global_embed = mlp(inputs["global_cond"].double(), "to_global_embed") + mlp(features, "to_timestep_embed")
    x = x + torch.einsum("oc,bct->bot", sd["preprocess_conv.weight"][:, :, 0], x)
    h = linear(x.transpose(1, 2), "transformer.project_in")
    h = torch.cat([sd["transformer.memory_tokens"].expand(batch, -1, -1), h], 1) if memory else h
    key_mask = torch.cat([torch.ones(batch, memory, dtype=torch.bool), inputs["padding_mask"]], 1)
    modulation = mlp(global_embed, "transformer.global_cond_embedder")
    local = inputs["local_add_cond"].double().transpose(1, 2)
    for i in range(config["depth"]):
        p = f"transformer.layers.{i}."
        scale_sa, shift_sa, gate_sa, scale_ff, shift_ff, gate_ff = (
            (sd[p + "to_scale_shift_gate"] + modulation)[:, None].chunk(6, -1))
        y = rms(h, sd[p + "pre_norm.gamma"], 1e-5) * (1 + scale_sa) + shift_sa
        h = h + attention(y, p + "self_attn", None, True, key_mask) * torch.sigmoid(1 - gate_sa)
        h = h + attention(rms(h, sd[p + "cross_attend_norm.gamma"], 1e-5), p + "cross_attn", context, False, None)
        emb = mlp(local, p + "to_local_embed")
        h = h + torch.cat([torch.zeros(batch, memory, dim, dtype=h.dtype), emb], 1)
        y = rms(h, sd[p + "ff_norm.gamma"], 1e-5) * (1 + scale_ff) + shift_ff
        value, gate = linear(y, p + "ff.ff.0.proj").chunk(2, -1)
        h = h + linear(value * F.silu(gate), p + "ff.ff.2") * torch.sigmoid(1 - gate_ff)
    out = linear(h[:, memory:], "transformer.project_out").transpose(1, 2)
    return out + torch.einsum("oc,bct->bot", sd["postprocess_conv.weight"][:, :, 0], out)


SIZES = [
    # head_dim 48: 32 of 48 dims rotated; 5 memory tokens; standard attention
    dict(),
    # head_dim 32 (the smallest allowed, fully rotated), differential attention, no memory tokens
    dict(embed_dim=64, num_heads=2, depth=2, num_memory_tokens=0, attn_kwargs={"qk_norm": "rms", "differential": True}),
    # one head of 80: 40 rotated dims, 3 memory tokens, differential, depth 1
    dict(embed_dim=80, num_heads=1, depth=1, num_memory_tokens=3, attn_kwargs={"qk_norm": "rms", "differential": True}),
]


@pytest.mark.parametrize("overrides", SIZES)
@pytest.mark.parametrize("padding_mode", ["vzero", "mask"])
def test_forward_matches_reference_at_other_sizes(overrides, padding_mode):
    config = tiny_config(**overrides)
    dit = random_dit(config)
    inputs = random_inputs(config, lengths=[11, 7], frames=11)
    with torch.no_grad():
        ours = dit(**inputs, padding_mode=padding_mode)
    expected = reference_forward(dit, config, inputs, padding_mode)
    torch.testing.assert_close(ours.double(), expected, atol=1e-4, rtol=1e-4)


def test_rotary_width_follows_head_size():
    for embed_dim, heads, expected_rot in [(96, 2, 32), (64, 2, 32), (80, 1, 40), (256, 2, 64)]:
        dit = DiffusionTransformer.from_config(tiny_config(embed_dim=embed_dim, num_heads=heads, depth=1))
        assert 2 * dit.transformer.rotary_pos_emb.inv_freq.numel() == expected_rot


def test_hidden_states_include_memory_tokens():
    config = tiny_config()
    dit = random_dit(config)
    inputs = random_inputs(config, lengths=[9, 9], frames=9)
    with torch.no_grad():
        v, hidden = dit(**inputs, return_hidden=True)
    assert v.shape == inputs["x"].shape
    assert hidden.shape == (config["depth"], 2, config["num_memory_tokens"] + 9, config["embed_dim"])


def test_true_masking_makes_padding_invisible():
    """With padding_mode="mask" the valid frames equal a run on the unpadded item alone."""
    config = tiny_config(attn_kwargs={"qk_norm": "rms", "differential": True})
    dit = random_dit(config)
    inputs = random_inputs(config, lengths=[6], frames=10)
    cropped = {k: v for k, v in inputs.items() if k != "padding_mask"}
    cropped["x"], cropped["local_add_cond"] = inputs["x"][..., :6], inputs["local_add_cond"][..., :6]
    with torch.no_grad():
        padded = dit(**inputs, padding_mode="mask")
        alone = dit(**cropped)
        vzero = dit(**inputs, padding_mode="vzero")
    torch.testing.assert_close(padded[..., :6], alone, atol=1e-5, rtol=1e-5)
    # The official CPU path keeps padded keys in the softmax, so it does see the padding.
    assert (vzero[..., :6] - alone).abs().max() > 1e-3


def test_items_are_independent_in_a_batch():
    config = tiny_config()
    dit = random_dit(config)
    inputs = random_inputs(config, lengths=[8, 5], frames=8)
    second = {k: v[1:] for k, v in inputs.items()}
    with torch.no_grad():
        torch.testing.assert_close(dit(**inputs)[1:], dit(**second), atol=1e-5, rtol=1e-5)


def test_half_precision_runs_close_to_float32():
    config = tiny_config()
    dit = random_dit(config)
    inputs = random_inputs(config, lengths=[8, 8], frames=8)
    with torch.no_grad():
        full = dit(**inputs)
        half = dit.to(torch.bfloat16)(**inputs)
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max() < 0.1 * full.abs().max()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(global_cond_type="prepend"), "global_cond_type"),
        (dict(timestep_features_type="learned"), "timestep_features_type"),
        (dict(embed_dim=48, num_heads=2), "at least 32"),
        (dict(made_up_option=1), "made_up_option"),
        (dict(attn_kwargs={"qk_norm": "rms", "lambda_init": 0.8}), "attn_kwargs.lambda_init"),
    ],
)
def test_unsupported_configs_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        DiffusionTransformer.from_config(tiny_config(**overrides))


@pytest.mark.parametrize(
    ("drop", "field"), [("norm_type", "config.norm_type"), ("qk_norm", "config.attn_kwargs.qk_norm")]
)
def test_unsupported_official_norm_defaults_name_the_field(drop, field):
    """Without norm_type / qk_norm the official defaults apply (layer_norm, none), which SA3 never uses."""
    config = tiny_config()
    if drop == "norm_type":
        del config["norm_type"]
    else:
        config["attn_kwargs"] = {"differential": False}
    with pytest.raises(ConfigError, match=rf"model\.diffusion\.{field} is missing"):
        DiffusionTransformer.from_config(config)
    with pytest.raises(ConfigError, match=r"norm_type = 'layer_norm' is not supported"):
        DiffusionTransformer.from_config(tiny_config(norm_type="layer_norm"))


@pytest.mark.parametrize(("dtype", "t_rounding"), [(torch.bfloat16, torch.float32), (torch.float16, torch.float16)])
def test_t_is_rounded_to_fp16_under_float16_only(dtype, t_rounding):
    """Official model_half rounds t to fp16 before the Fourier features; bfloat16 keeps t float32."""
    config = tiny_config()
    dit = random_dit(config).to(dtype)
    t = torch.tensor([0.9937, 0.4133])  # far from bfloat16-representable values: rounding moves the features
    features = expo_fourier_features(t.to(t_rounding)[:, None], config["timestep_features_dim"])
    with torch.no_grad():
        assert torch.equal(dit.timestep_embed(t), dit.to_timestep_embed(features.to(dtype)))


def test_missing_required_field_is_named():
    config = tiny_config()
    del config["embed_dim"]
    with pytest.raises(ConfigError, match="embed_dim"):
        DiffusionTransformer.from_config(config)


def test_bad_inputs_raise_clear_errors():
    config = tiny_config()
    dit = random_dit(config)
    inputs = random_inputs(config, lengths=[4], frames=4)
    with pytest.raises(ValueError, match="x must be"):
        dit(**{**inputs, "x": inputs["x"][:, :2]})
    with pytest.raises(ValueError, match="padding_mode"):
        dit(**inputs, padding_mode="zeros")
    with pytest.raises(ValueError, match="local_add_cond"):
        dit(**{**inputs, "local_add_cond": inputs["local_add_cond"][:, :3]})
