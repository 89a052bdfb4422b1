import pytest
import torch
from safetensors.torch import load_file

from sa3_engine.sampling.dpmpp import sample_dpmpp
from sa3_engine.sampling.euler import sample_euler
from sa3_engine.sampling.pingpong import randn_noise, sample_pingpong
from sa3_engine.sampling.schedules import DEFAULT_SAMPLING_SHIFT, build_schedule

SAMPLERS = [sample_pingpong, sample_euler, sample_dpmpp]


def oracle(x0):
    """The exact velocity for data x0: x_t = (1-t) x0 + t eps  =>  v = eps - x0 = (x - x0) / t."""
    return lambda x, t: (x - x0) / t.view(-1, 1, 1)


def gaussian_model(mu, s):
    """Exact velocity when every element of x0 is N(mu, s^2); its flow maps noise z to mu + s z."""

    def model(x, t):
        t = t.view(-1, 1, 1)
        denoised = mu + (1 - t) * s * s / ((1 - t) ** 2 * s * s + t * t) * (x - (1 - t) * mu)
        return (x - denoised) / t

    return model


@pytest.fixture
def x0():
    return torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def start():
    return torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("per_item", [False, True])
def test_exact_velocity_lands_on_the_data(sampler, per_item, x0, start):
    sigmas = build_schedule(8, lengths=[100, 200] if per_item else None, shift=DEFAULT_SAMPLING_SHIFT)
    out = sampler(oracle(x0), start, sigmas)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", [sample_euler, sample_dpmpp])
def test_global_and_per_item_schedules_give_identical_results(sampler, start):
    model = gaussian_model(0.3, 0.8)
    sigmas = build_schedule(6, shift=DEFAULT_SAMPLING_SHIFT)
    assert torch.equal(sampler(model, start, sigmas), sampler(model, start, sigmas.expand(2, -1).clone()))


def test_items_follow_their_own_schedule(x0, start):
    sigmas = torch.stack([build_schedule(5), build_schedule(5, shift=DEFAULT_SAMPLING_SHIFT)])
    seen = []
    model = oracle(x0)

    def record(x, t):
        seen.append(t.clone())
        return model(x, t)

    out = sample_euler(record, start, sigmas)
    torch.testing.assert_close(torch.stack(seen, dim=1), sigmas[:, :-1])
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_euler_and_dpmpp_converge_to_the_flow_solution():
    mu, s = 0.5, 1.0
    noise = torch.randn(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = mu + s * noise

    def error(sampler, steps):
        out = sampler(gaussian_model(mu, s), noise, build_schedule(steps).double())
        return (out - exact).abs().max().item()

    euler = [error(sample_euler, n) for n in (64, 128)]
    dpmpp = [error(sample_dpmpp, n) for n in (64, 128)]
    # Euler is first order: doubling the steps halves the error
    assert 1.8 < euler[0] / euler[1] < 2.2
    # DPM++ 2M does far better and converges faster than first order
    assert dpmpp[1] < euler[1] / 20
    assert dpmpp[0] / dpmpp[1] > 3.0


def test_pingpong_renoises_the_denoised_estimate_with_each_steps_noise(x0, start):
    sigmas = build_schedule(6, shift=DEFAULT_SAMPLING_SHIFT)
    eps = torch.randn(6, *start.shape, generator=torch.Generator().manual_seed(4))
    asked, states = [], []

    def noise(i, like):
        asked.append(i)
        assert like.shape == start.shape
        return eps[i]

    out = sample_pingpong(oracle(x0), start, sigmas, noise=noise, callback=lambda d: states.append(d["x"]))
    assert asked == list(range(6))  # the last step (t = 0) draws too
    for i in range(1, 6):
        torch.testing.assert_close(states[i], (1 - sigmas[i]) * x0 + sigmas[i] * eps[i - 1])
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_pingpong_default_noise_is_the_global_rng_and_a_generator_reproduces_it(start):
    model = gaussian_model(0.0, 0.7)
    sigmas = build_schedule(4, shift=DEFAULT_SAMPLING_SHIFT)
    torch.manual_seed(123)
    from_global = sample_pingpong(model, start, sigmas)
    from_generator = sample_pingpong(
        model, start, sigmas, noise=randn_noise(torch.Generator().manual_seed(123))
    )
    assert torch.equal(from_global, from_generator)
    other = sample_pingpong(model, start, sigmas, noise=randn_noise(torch.Generator().manual_seed(124)))
    assert not torch.allclose(from_global, other)


@pytest.mark.parametrize("case, seed", [("05_pingpong_generate", 1061), ("07_inpaint_generate", 1081)])
def test_generator_reproduces_the_official_random_stream(parity_dir, case, seed):
    inputs = load_file(parity_dir / case / "inputs.safetensors")
    generator = torch.Generator().manual_seed(seed)
    initial = torch.randn(inputs["initial_noise"].shape, generator=generator)
    assert torch.equal(initial, inputs["initial_noise"])
    draw = randn_noise(generator)
    for i, expected in enumerate(inputs["step_noise"]):
        assert torch.equal(draw(i, initial), expected)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_callback_sees_every_step(sampler, x0, start):
    sigmas = build_schedule(5, lengths=[10, 20], shift=DEFAULT_SAMPLING_SHIFT)
    events = []
    sampler(oracle(x0), start, sigmas, callback=events.append)
    assert [e["i"] for e in events] == list(range(5))
    assert all(e["n"] == 5 for e in events)
    torch.testing.assert_close(torch.stack([e["t"] for e in events], dim=1), sigmas[:, :-1])
    assert torch.equal(events[0]["x"], start)
    for e in events:  # the exact model's denoised estimate is the data at every step
        torch.testing.assert_close(e["denoised"], x0, atol=1e-5, rtol=1e-5)


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_an_exception_in_the_callback_cancels(sampler, x0, start):
    calls = []
    model = oracle(x0)

    def counting(x, t):
        calls.append(1)
        return model(x, t)

    def cancel_at_two(event):
        if event["i"] == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        sampler(counting, start, build_schedule(8), callback=cancel_at_two)
    assert len(calls) == 3


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bad_schedule_shape_is_refused(sampler, start):
    with pytest.raises(ValueError, match="sigmas"):
        sampler(lambda x, t: x, start, torch.linspace(1, 0, 5).expand(3, -1))


def bf16_exact(shape, seed: int) -> torch.Tensor:
    """float32 values that bfloat16 represents exactly, so rounding the inputs loses nothing."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).bfloat16().float()


@pytest.mark.parametrize("sampler", [sample_euler, sample_dpmpp])
def test_a_half_precision_model_does_not_round_the_sampler_state(sampler):
    """A bfloat16 DiT (bfloat16 start, bfloat16 velocities) with a constant velocity: 50 steps land on the
    data as in float32, because x is kept float32 (in bfloat16 each step's rounding would add up to ~0.2)."""
    eps, v0 = bf16_exact((1, 8, 64), 0), bf16_exact((1, 8, 64), 1)
    out = sampler(lambda x, t: v0.to(torch.bfloat16), eps.to(torch.bfloat16), build_schedule(50))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, eps - v0, atol=1e-5, rtol=0)


def test_pingpong_keeps_x_and_t_float32_for_a_half_precision_model():
    sigmas = build_schedule(8, lengths=[300], shift=DEFAULT_SAMPLING_SHIFT)
    seen = []

    def model(x, t):
        seen.append((x.dtype, t))
        return torch.zeros_like(x, dtype=torch.bfloat16)

    out = sample_pingpong(model, bf16_exact((1, 4, 6), 0).bfloat16(), sigmas,
                          noise=randn_noise(torch.Generator().manual_seed(0)))
    assert out.dtype == torch.float32 and all(dtype == torch.float32 for dtype, _ in seen)
    assert torch.equal(torch.stack([t for _, t in seen], dim=1), sigmas[:, :-1])  # not rounded to bfloat16


def test_generator_noise_is_drawn_on_the_generators_device():
    """x on another device (meta stands in for CUDA/MPS): the CPU stream still advances draw for draw."""
    draw = randn_noise(torch.Generator().manual_seed(7))
    like = torch.empty(2, 3, 5, device="meta")
    out = draw(0, like)
    assert out.device == like.device and out.shape == like.shape
    stream = torch.Generator().manual_seed(7)
    torch.randn(like.shape, generator=stream)
    assert torch.equal(draw(1, torch.empty(2, 3, 5)), torch.randn(like.shape, generator=stream))
