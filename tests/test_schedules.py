import math
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

from sa3_engine.models.config import ConfigError, load_config
from sa3_engine.sampling.schedules import (
    DEFAULT_SAMPLING_SHIFT,
    build_schedule,
    flux_shift,
    full_shift,
    identity_shift,
    logsnr_shift,
    per_item,
    sampling_shift,
    shift_from_options,
)


@pytest.mark.parametrize("case", ["05_pingpong_generate", "06_base_cfg_generate"])
def test_default_schedule_matches_official_sigmas(parity_dir, case):
    folder = parity_dir / case
    config = load_config(folder / "config.json")
    expected = load_file(folder / "outputs.safetensors")["sigmas"]
    seconds = load_file(folder / "inputs.safetensors")["seconds_total"]
    ratio = config["model"]["pretransform"]["config"]["downsampling_ratio"]
    # effective latent length per item, as generate() computes it
    lengths = [math.ceil(int(float(s) * config["sample_rate"]) / ratio) for s in seconds]
    steps = expected.shape[1] - 1

    sigmas = build_schedule(steps, lengths=lengths, shift=sampling_shift(config))

    assert sigmas.dtype == torch.float32 and sigmas.shape == expected.shape
    torch.testing.assert_close(sigmas, expected, atol=1e-6, rtol=1e-6)
    # one global row is the same schedule (rate 0 does not depend on the length)
    torch.testing.assert_close(
        build_schedule(steps, shift=sampling_shift(config)), expected[0], atol=0, rtol=0
    )


def test_endpoints_are_exact_and_schedule_decreases():
    for shift in (identity_shift, DEFAULT_SAMPLING_SHIFT, full_shift, logsnr_shift):
        sigmas = build_schedule(10, lengths=[50, 700, 5000], shift=shift)
        assert sigmas.shape == (3, 11)
        assert (sigmas[:, 0] == 1).all() and (sigmas[:, -1] == 0).all()
        assert (sigmas[:, 1:] < sigmas[:, :-1]).all()


def test_logsnr_is_uniform_in_log_snr_between_start_and_end():
    sigmas = build_schedule(6, lengths=[4000], shift=partial(logsnr_shift, rate=1.0))[0]
    ell = torch.log((1 - sigmas[1:-1].double()) / sigmas[1:-1].double())
    u = torch.linspace(1, 0, 7, dtype=torch.float64)[1:-1]
    start = -6.2 - 1.0 * math.log2(4000 / 2000)  # one doubling past the anchor: one unit noisier
    torch.testing.assert_close(ell, 2.0 - u * (2.0 - start), atol=1e-4, rtol=0)


def test_logsnr_rate_makes_longer_items_noisier():
    sigmas = build_schedule(8, lengths=[500, 2000, 8000], shift=logsnr_shift)
    assert (sigmas[0, 1:-1] < sigmas[1, 1:-1]).all() and (sigmas[1, 1:-1] < sigmas[2, 1:-1]).all()


def test_full_shift_matches_reference_examples():
    sigmas = build_schedule(8, lengths=[108, 1292], shift=full_shift)
    expected = torch.tensor(
        [
            [1, 0.9203, 0.8318, 0.7332, 0.6225, 0.4973, 0.3547, 0.1906, 0],
            [1, 0.9322, 0.8550, 0.7661, 0.6627, 0.5410, 0.3957, 0.2192, 0],
        ]
    )
    torch.testing.assert_close(sigmas, expected, atol=6e-5, rtol=0)


def test_flux_shift_closed_form_and_length_interpolation():
    u = torch.linspace(1, 0, 5)
    const = flux_shift(u, torch.tensor([300.0]), alpha_min=6.93, alpha_max=6.93)[0]
    torch.testing.assert_close(const, 6.93 * u / (1 + 5.93 * u))
    varying = flux_shift(u, torch.tensor([256.0, 1024.0, 4096.0]), alpha_min=2.0, alpha_max=8.0)
    # log-linear in log L: the middle length (geometric mean) gets alpha 4
    torch.testing.assert_close(varying[1], 4.0 * u / (1 + 3.0 * u))
    torch.testing.assert_close(varying[2], 8.0 * u / (1 + 7.0 * u))


def test_identity_and_sigma_max_below_one():
    torch.testing.assert_close(build_schedule(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    # LogSNR starting at 0.8: the first entry is pinned to 0.8, the second re-noises above it
    sigmas = build_schedule(8, sigma_max=0.8, lengths=[108], shift=DEFAULT_SAMPLING_SHIFT)[0]
    expected = torch.tensor([0.8, 0.97680, 0.94883, 0.89090, 0.78245, 0.61301, 0.41096, 0.23505, 0.0])
    torch.testing.assert_close(sigmas, expected, atol=6e-6, rtol=0)


def test_batch_of_steps_plus_one_items_still_gets_rows_per_item():
    lengths = [256, 512, 1024, 2048, 4096]
    sigmas = build_schedule(4, lengths=lengths, shift=full_shift)
    for row, length in zip(sigmas, lengths, strict=True):
        torch.testing.assert_close(row, build_schedule(4, lengths=[length], shift=full_shift)[0])


def test_length_dependent_shift_needs_lengths():
    with pytest.raises(ValueError, match="lengths"):
        build_schedule(4, shift=full_shift)
    with pytest.raises(ValueError, match="lengths"):
        build_schedule(4, shift=logsnr_shift)


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"steps": 2.5}, {"steps": 4, "sigma_max": 0.0}, {"steps": 4, "sigma_max": 1.5}]
)
def test_bad_schedule_arguments(kwargs):
    with pytest.raises(ValueError):
        build_schedule(**kwargs)


def test_shift_from_options_follows_official_defaults():
    u = torch.linspace(1, 0, 9)
    lengths = torch.tensor([108.0, 3000.0])
    assert shift_from_options(None) is DEFAULT_SAMPLING_SHIFT
    # "type" defaults to "full"; a bare logsnr uses the class default rate 1
    torch.testing.assert_close(shift_from_options({})(u, lengths), full_shift(u, lengths))
    torch.testing.assert_close(
        shift_from_options({"type": "logsnr"})(u, lengths), logsnr_shift(u, lengths, rate=1.0)
    )
    flux = shift_from_options({"type": "flux", "alpha_min": 3.0, "alpha_max": 3.0})
    torch.testing.assert_close(flux(u, lengths)[0], 3.0 * u / (1 + 2.0 * u))
    torch.testing.assert_close(shift_from_options({"type": "none"})(u, lengths), u.expand(2, -1))


def test_sampling_shift_reads_the_config():
    config = {"model": {"diffusion": {"sampling_distribution_shift_options": None}}}
    assert sampling_shift(config) is DEFAULT_SAMPLING_SHIFT
    del config["model"]["diffusion"]["sampling_distribution_shift_options"]
    assert sampling_shift(config) is DEFAULT_SAMPLING_SHIFT
    config["model"]["diffusion"]["sampling_distribution_shift_options"] = {"type": "full", "max_shift": 2.0}
    u, lengths = torch.linspace(1, 0, 5), torch.tensor([4096.0])
    torch.testing.assert_close(sampling_shift(config)(u, lengths), full_shift(u, lengths, max_shift=2.0))


@pytest.mark.parametrize(
    "options, field",
    [
        ({"type": "karras"}, "options.type"),
        ({"type": "logsnr", "alpha_min": 2.0}, "options.alpha_min"),
        ([1, 2], "sampling_distribution_shift_options must be"),
    ],
)
def test_bad_shift_options_name_the_field(options, field):
    config = {"model": {"diffusion": {"sampling_distribution_shift_options": options}}}
    with pytest.raises(ConfigError, match=field):
        sampling_shift(config)


def test_per_item_view():
    sigmas = torch.linspace(1, 0, 5)
    assert torch.equal(per_item(sigmas, 3), sigmas.expand(3, -1))
    with pytest.raises(ValueError, match="sigmas"):
        per_item(torch.zeros(2, 5), 3)
    with pytest.raises(ValueError, match="sigmas"):
        per_item(torch.ones(1), 1)
