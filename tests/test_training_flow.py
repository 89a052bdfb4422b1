"""The stage-1 functions against values computed by hand (or by an independent formula)."""

import math
from statistics import NormalDist

import pytest
import torch

from sa3_engine.sampling.schedules import full_shift
from sa3_engine.training.coupling import hungarian, pair_noise, sinkhorn_greedy, transport_cost
from sa3_engine.training.masks import (
    causal_mask,
    inpaint_masks,
    lengths_mask,
    segments_mask,
    silence_extension,
)
from sa3_engine.training.rectified_flow import (
    effective_lengths,
    flow_loss,
    length_shift,
    masked_mse,
    noised,
    trunc_logit_normal,
    trunc_logit_normal_from_uniform,
    velocity_target,
)
from sa3_engine.training.spectral import mid_side, pre_emphasis, si_sdr, stereo_stft_loss


def test_trunc_logit_normal_maps_uniform_draws_as_the_official_formula():
    normal, left = NormalDist(), 0.075
    low = normal.cdf(math.log(left / (1 - left)))
    for u in (0.0, 0.25, 0.5, 0.9):
        s = 1 / (1 + math.exp(-normal.inv_cdf(low + u * (1 - low))))
        expected = 1 - (s - left) / (1 - left)
        got = trunc_logit_normal_from_uniform(torch.tensor([u], dtype=torch.float64))
        assert float(got) == pytest.approx(expected, abs=1e-12)
    assert float(trunc_logit_normal_from_uniform(torch.tensor([0.0], dtype=torch.float64))) == pytest.approx(1.0)


def test_trunc_logit_normal_draws_stay_in_the_unit_interval_and_follow_the_generator():
    t = trunc_logit_normal(4000, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 1 and 0.35 < float(t.mean()) < 0.65
    assert torch.equal(t, trunc_logit_normal(4000, torch.Generator().manual_seed(0)))


def test_length_shift_by_hand_and_equal_to_the_full_sampling_shift():
    # L = 256 -> alpha = e^0.5; t = 0.5 -> alpha/(1+alpha)
    alpha = math.exp(0.5)
    got = length_shift(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([100, 256, 4096]))
    assert got.tolist() == pytest.approx([alpha / (1 + alpha), alpha / (1 + alpha),
                                          math.exp(1.15) / (1 + math.exp(1.15))], abs=1e-6)
    t, lengths = torch.tensor([0.1, 0.4, 0.7, 0.95]), torch.tensor([300, 1000, 2000, 4000])
    reference = torch.stack([full_shift(t[i : i + 1], lengths[i : i + 1])[0, 0] for i in range(4)])
    assert torch.allclose(length_shift(t, lengths), reference, atol=1e-6)


def test_effective_length_is_the_ceiling_of_the_duration_in_latent_frames():
    assert effective_lengths(torch.tensor([10.0, 4096 / 44100]), 44100, 4096).tolist() == [108, 1]


def test_noising_and_velocity_target_by_hand():
    x0, eps = torch.full((2, 1, 1), 2.0), torch.full((2, 1, 1), -1.0)
    assert noised(x0, eps, torch.tensor([0.25, 1.0])).flatten().tolist() == [1.25, -1.0]
    assert velocity_target(x0, eps).flatten().tolist() == [-3.0, -3.0]


def test_masked_mse_averages_per_item_then_over_items_with_frames():
    pred = torch.tensor([[[1.0, 3.0, 100.0]], [[0.0, 0.0, 0.0]], [[5.0, 5.0, 5.0]]])
    target = torch.zeros_like(pred)
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    # item 0: (1 + 9)/2 = 5; item 1: 0; item 2 has no frame
    assert float(masked_mse(pred, target, mask)) == pytest.approx(2.5)


def test_flow_loss_splits_generated_and_context_frames():
    v = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    valid = torch.tensor([[True, True, True, False]])
    keep = torch.tensor([[True, False, False, False]])
    loss, parts = flow_loss(v, torch.zeros_like(v), valid, keep, context_weight=0.5)
    assert parts == {"flow": pytest.approx(6.5), "context": pytest.approx(1.0)}
    assert float(loss) == pytest.approx(7.0)


def test_transport_cost_counts_only_the_data_items_valid_frames():
    data = torch.tensor([[[1.0, 5.0]], [[0.0, 0.0]]])
    noise = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])
    cost = transport_cost(data, noise, torch.tensor([[True, False], [True, True]]))
    assert cost.tolist() == [[1.0, 0.0], [0.0, 2.0]]


@pytest.mark.parametrize("rule", [sinkhorn_greedy, hungarian])
def test_pairing_rules_find_the_obvious_permutation(rule):
    cost = torch.tensor([[9.0, 1.0, 8.0], [1.0, 9.0, 8.0], [8.0, 9.0, 1.0]])
    assert rule(cost).tolist() == [1, 0, 2]


def test_sinkhorn_balancing_lets_greedy_rows_give_up_a_contested_column():
    # both rows prefer column 0; a plain row-wise greedy would give it to row 0 (cost 100 in total), the
    # balanced plan gives it to row 1, whose alternative is much worse (cost 1), as the optimum does
    cost = torch.tensor([[0.0, 1.0], [0.0, 100.0]])
    assert int(cost.argmin(dim=1)[0]) == 0
    assert hungarian(cost).tolist() == [1, 0]
    assert sinkhorn_greedy(cost).tolist() == [1, 0]


def test_pair_noise_permutes_whole_items():
    data = torch.tensor([[[1.0]], [[-1.0]]])
    noise = torch.tensor([[[-1.1]], [[0.9]]])
    assert pair_noise(data, noise, None, "hungarian").flatten().tolist() == pytest.approx([0.9, -1.1])
    assert torch.equal(pair_noise(data, noise, None, "none"), noise)


def test_silence_extension_is_clamped_and_zero_mean_keeps_lengths():
    g = torch.Generator().manual_seed(0)
    valid = torch.tensor([3, 10])
    assert silence_extension(valid, 10, 0, g).tolist() == [3, 10]
    extended = silence_extension(valid.repeat(500), 10, 2.0, g)
    assert (extended >= valid.repeat(500)).all() and extended.max() == 10
    assert 0.5 < float((extended[::2] - 3).float().mean()) < 3.0


def test_lengths_mask_by_hand():
    assert lengths_mask(torch.tensor([2, 0]), 3).tolist() == [[True, True, False], [False, False, False]]


def test_segment_and_causal_masks_stay_inside_the_valid_length():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        seg = segments_mask(7, 10, g)
        assert seg[7:].sum() == 0 and 0 < (seg[:7] == 0).sum() <= 7
        causal = causal_mask(7, 10, g)
        prefix = int(causal.sum())
        assert 1 <= prefix <= 6 and causal[:prefix].all() and causal[prefix:].sum() == 0


def test_inpaint_mask_types_follow_their_probabilities():
    g = torch.Generator().manual_seed(2)
    masks, kinds = inpaint_masks(torch.full((2000,), 20), 24, g)
    share = {k: kinds.count(k) / len(kinds) for k in ("full", "segments", "causal")}
    assert share["full"] == pytest.approx(0.8, abs=0.03) and share["causal"] == pytest.approx(0.1, abs=0.03)
    full = [i for i, k in enumerate(kinds) if k == "full"]
    assert masks.shape == (2000, 1, 24) and masks[full].sum() == 0 and masks[:, :, 20:].sum() == 0
    only_causal, _ = inpaint_masks(torch.tensor([5]), 5, g, probs=(0, 0, 1))
    assert only_causal[0, 0, 0] == 1 and only_causal[0, 0, -1] == 0


def test_si_sdr_by_hand_and_scale_invariance():
    s = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    noise = torch.tensor([[1.0, 1.0, -1.0, -1.0]]) * 0.1  # orthogonal to s, zero mean
    assert float(si_sdr(s, s + noise)) == pytest.approx(20.0, abs=1e-4)
    assert float(si_sdr(s, 3 * (s + noise))) == pytest.approx(20.0, abs=1e-4)


def test_mid_side_pre_emphasis_and_stft_loss_by_hand():
    lr = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])
    assert mid_side(lr).tolist() == [[[2.0, 1.0], [-1.0, 1.0]]]
    assert pre_emphasis(torch.tensor([1.0, 1.0, 0.0]), 0.5).tolist() == [1.0, 0.5, -0.5]
    audio = torch.randn(1, 2, 4096, generator=torch.Generator().manual_seed(0))
    assert float(stereo_stft_loss(audio, audio)) == pytest.approx(0.0, abs=1e-6)
    assert float(stereo_stft_loss(audio, audio * 0.5)) > 0.5


def test_phase_distance_sees_a_phase_change_that_magnitudes_do_not():
    from sa3_engine.training.spectral import phase_distance, spectrum

    t = torch.arange(4096, dtype=torch.float32)
    a = torch.sin(0.3 * t)[None]
    b = torch.sin(0.3 * t + 0.5 * torch.sin(0.002 * t))[None]  # phase-modulated, same spectrum envelope
    s, s_b = spectrum(a, 256), spectrum(b, 256)
    assert float(phase_distance(s, s)) == pytest.approx(0.0, abs=1e-5)
    assert float(phase_distance(s, s_b)) > 0.05
    # a gain does not move the phase (up to the phasor epsilon in near-empty bins)
    assert float(phase_distance(s, s * 3.0)) < 1e-3
