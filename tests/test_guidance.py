import pytest
import torch

from sa3_engine.sampling.euler import sample_euler
from sa3_engine.sampling.guidance import guide, guided_model, orthogonal_part, uncond_context
from sa3_engine.sampling.schedules import build_schedule

B, C, T, S, D = 2, 4, 10, 3, 5


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class FakeDit:
    """A DiT-like callable whose velocity depends on every input; it records its calls."""

    def __init__(self):
        self.pattern = rand(C, T, seed=10)
        self.calls = []

    def __call__(self, x, t, cross, global_, local, padding_mask):
        self.calls.append(
            dict(x=x, t=t, cross=cross, global_=global_, local=local, padding_mask=padding_mask)
        )
        context = cross.sum(dim=(1, 2)).view(-1, 1, 1) * self.pattern + torch.tanh(
            cross[:, :1, :C].transpose(1, 2)
        )
        return (
            0.3 * x + context + global_.sum(-1).view(-1, 1, 1) * 0.1 + local[:, :C] * 0.2 + t.view(-1, 1, 1)
        )


@pytest.fixture
def inputs():
    padding_mask = torch.ones(B, T, dtype=torch.bool)
    padding_mask[1, 7:] = False
    return dict(
        cross=rand(B, S, D, seed=1),
        global_=rand(B, D, seed=2),
        local=rand(B, C + 1, T, seed=3),
        padding_mask=padding_mask,
    )


@pytest.fixture
def x():
    return rand(B, C, T, seed=4)


def branches(dit, x, t, inputs, uncond=None):
    """Conditional and unconditional velocities from two separate DiT calls."""
    v_c = dit(x, t, inputs["cross"], inputs["global_"], inputs["local"], inputs["padding_mask"])
    uncond = torch.zeros_like(inputs["cross"]) if uncond is None else uncond
    v_u = dit(x, t, uncond, inputs["global_"], inputs["local"], inputs["padding_mask"])
    return v_c, v_u


def test_cfg_one_is_the_conditional_model(inputs, x):
    dit = FakeDit()
    t = torch.tensor([0.7, 0.7])
    v = guided_model(dit, **inputs, cfg_scale=1.0)(x, t)
    assert len(dit.calls) == 1 and dit.calls[0]["x"].shape[0] == B
    assert torch.equal(
        v, FakeDit()(x, t, inputs["cross"], inputs["global_"], inputs["local"], inputs["padding_mask"])
    )


def test_guidance_runs_one_batched_pass_with_a_zero_uncond_context(inputs, x):
    dit = FakeDit()
    t = torch.tensor([0.6, 0.6])
    guided_model(dit, **inputs, cfg_scale=5.0)(x, t)
    assert len(dit.calls) == 1
    call = dit.calls[0]
    assert torch.equal(call["x"], torch.cat([x, x]))
    assert torch.equal(call["t"], torch.cat([t, t]))
    assert torch.equal(call["cross"], torch.cat([inputs["cross"], torch.zeros_like(inputs["cross"])]))
    for name in ("global_", "local", "padding_mask"):
        assert torch.equal(call[name], torch.cat([inputs[name], inputs[name]]))


def test_apg_zero_is_vanilla_cfg(inputs, x):
    t = torch.tensor([0.6, 0.6])
    v_c, v_u = branches(FakeDit(), x, t, inputs)
    v = guided_model(FakeDit(), **inputs, cfg_scale=7.0, apg_scale=0.0)(x, t)
    torch.testing.assert_close(v, v_u + 7.0 * (v_c - v_u), atol=1e-5, rtol=1e-5)


def test_apg_keeps_only_the_part_orthogonal_to_the_conditional_estimate(x):
    t = torch.tensor([0.8, 0.4])
    inputs = dict(cross=rand(B, S, D, seed=1), global_=rand(B, D, seed=2), local=rand(B, C + 1, T, seed=3))
    v_c, v_u = branches(FakeDit(), x, t, {**inputs, "padding_mask": None})
    v = guided_model(FakeDit(), **inputs, cfg_scale=4.0, apg_scale=1.0)(x, t)
    tt = t.view(-1, 1, 1)
    d_c, d_u, d = x - tt * v_c, x - tt * v_u, x - tt * v
    added = (d - d_c) / 3.0
    # orthogonal to D_c per item, and delta minus it is parallel to D_c
    assert (added * d_c).sum(dim=(1, 2)).abs().max() < 1e-4
    parallel = (d_c - d_u) - added
    cos = (parallel * d_c).sum(dim=(1, 2)) / (parallel.norm(dim=(1, 2)) * d_c.norm(dim=(1, 2)))
    torch.testing.assert_close(cos.abs(), torch.ones(B), atol=1e-5, rtol=0)


def test_apg_blend_interpolates_between_cfg_and_apg(inputs, x):
    t = torch.tensor([0.5, 0.5])

    def velocity(apg):
        return guided_model(FakeDit(), **inputs, cfg_scale=3.0, apg_scale=apg)(x, t)

    torch.testing.assert_close(
        velocity(0.25), 0.25 * velocity(1.0) + 0.75 * velocity(0.0), atol=1e-5, rtol=1e-5
    )


def test_padding_aware_projection_ignores_padded_frames(inputs):
    mask = inputs["padding_mask"]
    delta, direction = rand(B, C, T, seed=5), rand(B, C, T, seed=6)
    orth = orthogonal_part(delta, direction, mask)
    valid = mask.unsqueeze(1)
    assert (orth[~valid.expand_as(orth)] == 0).all()
    assert ((orth * direction * valid).sum(dim=(1, 2)).abs() < 1e-5).all()
    # garbage on padded frames changes nothing
    noisy_delta = torch.where(valid, delta, 1e3 * rand(B, C, T, seed=7))
    noisy_direction = torch.where(valid, direction, 1e3 * rand(B, C, T, seed=8))
    torch.testing.assert_close(orthogonal_part(noisy_delta, noisy_direction, mask), orth)
    # and the mask matters: item 1 (padded) differs from the unmasked projection on valid frames
    unmasked = orthogonal_part(delta, direction)
    assert torch.allclose(unmasked[0], orth[0], atol=1e-6)
    assert not torch.allclose(unmasked[1, :, :7], orth[1, :, :7], atol=1e-3)


def test_projection_is_float32_and_returns_the_input_dtype():
    delta, direction = rand(1, C, T, seed=5).half(), rand(1, C, T, seed=6).half()
    orth = orthogonal_part(delta, direction)
    assert orth.dtype == torch.float16
    expected = orthogonal_part(delta.float(), direction.float()).half()
    assert torch.equal(orth, expected)


def test_norm_threshold_limits_the_guidance_difference_over_valid_frames(inputs):
    mask = inputs["padding_mask"]
    d_c, d_u = rand(B, C, T, seed=5), rand(B, C, T, seed=6)
    guided = guide(d_c, d_u, cfg_scale=2.0, apg_scale=0.0, norm_threshold=0.5, padding_mask=mask)
    norm = ((guided - d_c) * mask.unsqueeze(1)).norm(dim=(1, 2))
    torch.testing.assert_close(norm, torch.full((B,), 0.5))
    loose = guide(d_c, d_u, cfg_scale=2.0, apg_scale=0.0, norm_threshold=1e6, padding_mask=mask)
    torch.testing.assert_close(loose, d_c + (d_c - d_u))


def test_negative_prompt_context_zeroes_its_padding(inputs, x):
    negative = rand(B, S, D, seed=9)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    uncond = uncond_context(inputs["cross"], negative, mask)
    assert torch.equal(uncond[0, 2], torch.zeros(D)) and torch.equal(uncond[1, 1], torch.zeros(D))
    assert torch.equal(uncond[0, :2], negative[0, :2]) and torch.equal(uncond[1, 2], negative[1, 2])
    assert torch.equal(uncond_context(inputs["cross"]), torch.zeros(B, S, D))

    dit = FakeDit()
    t = torch.tensor([0.6, 0.6])
    v = guided_model(dit, **inputs, uncond_cross=uncond, cfg_scale=3.0, apg_scale=0.0)(x, t)
    assert torch.equal(dit.calls[0]["cross"][B:], uncond)
    v_c, v_u = branches(FakeDit(), x, t, inputs, uncond=uncond)
    torch.testing.assert_close(v, v_u + 3.0 * (v_c - v_u), atol=1e-5, rtol=1e-5)


def test_interval_is_decided_by_item_zero(inputs, x):
    dit = FakeDit()
    model = guided_model(dit, **inputs, cfg_scale=3.0, cfg_interval=(0.2, 0.9))
    model(x, torch.tensor([0.95, 0.5]))
    model(x, torch.tensor([0.5, 0.95]))
    model(x, torch.tensor([0.1, 0.5]))
    assert [call["x"].shape[0] for call in dit.calls] == [B, 2 * B, B]


def test_zero_time_gives_the_conditional_velocity(inputs, x):
    t = torch.tensor([0.0, 0.5])
    v = guided_model(FakeDit(), **inputs, cfg_scale=7.0)(x, t)
    v_c, _ = branches(FakeDit(), x, t, inputs)
    assert torch.isfinite(v).all()
    torch.testing.assert_close(v[0], v_c[0])


def test_context_free_model_is_unchanged_by_guidance(inputs, x):
    x0 = rand(1, C, T, seed=11)  # broadcasts over the doubled batch too

    def dit(x, t, cross, global_, local, padding_mask):
        return (x - x0) / t.view(-1, 1, 1)

    sigmas = build_schedule(6)
    plain = sample_euler(lambda x, t: dit(x, t, *[None] * 4), x, sigmas)
    guided = sample_euler(guided_model(dit, **inputs, cfg_scale=7.0), x, sigmas)
    torch.testing.assert_close(guided, plain)
    torch.testing.assert_close(guided, x0.expand(B, -1, -1), atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_named(inputs):
    with pytest.raises(ValueError, match="uncond_cross"):
        guided_model(FakeDit(), **inputs, uncond_cross=torch.zeros(B, S + 1, D))
    with pytest.raises(ValueError, match="cfg_interval"):
        guided_model(FakeDit(), **inputs, cfg_interval=(0.9, 0.1))
    with pytest.raises(ValueError, match="negative_mask"):
        uncond_context(inputs["cross"], rand(B, S, D, seed=1), torch.ones(B, S + 1))
