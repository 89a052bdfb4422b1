"""Variable-length batches from a latent dataset, and the conditioning built from them (CFG dropout)."""

import torch

from sa3_engine.models.sa3 import SA3Model
from sa3_engine.training.conditioning import Prompts, condition
from sa3_engine.training.latents import LatentDataset, draw_batch
from sa3_engine.weights.tiny import tiny_config


def dataset(lengths=(3, 10)):
    latents = torch.cat([torch.full((4, n), float(i + 1)) for i, n in enumerate(lengths)], dim=1)
    return LatentDataset(latents, torch.tensor([0, *lengths]).cumsum(0), torch.full((4,), -7.0),
                         [["short"], ["long", "long too"]], [1.5, 4.0], 44100, 4096)


def test_latent_dataset_round_trips_through_its_file(tmp_path):
    data = dataset()
    loaded = LatentDataset.load(data.save(tmp_path / "lat.safetensors"))
    assert torch.equal(loaded.clip(1), data.clip(1)) and loaded.captions == data.captions
    assert loaded.seconds == [1.5, 4.0] and loaded.downsampling == 4096 and torch.equal(loaded.silence, data.silence)


def test_batches_crop_long_clips_and_pad_short_ones_with_the_silence_latent():
    g = torch.Generator().manual_seed(0)
    batch = draw_batch(dataset(), 2, 6, g, silence_seconds=0.0, items=[0, 1])
    assert batch.x0.shape == (2, 4, 6)
    assert batch.real.tolist() == [3, 6]
    assert batch.valid.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    assert (batch.x0[0, :, :3] == 1).all() and (batch.x0[0, :, 3:] == -7).all() and (batch.x0[1] == 2).all()
    assert batch.seconds.tolist() == [1.5, 4.0] and batch.prompts[0] == "short"


def test_silence_extension_makes_the_valid_region_longer_than_the_real_audio():
    g = torch.Generator().manual_seed(1)
    grew = 0
    for _ in range(20):
        batch = draw_batch(dataset(), 1, 8, g, silence_seconds=2.0, items=[0])
        assert batch.valid[0, :3].all() and int(batch.lengths[0]) >= 3
        assert batch.x0.shape[-1] == int(batch.lengths[0])  # as long as its longest valid item
        grew += int(batch.lengths[0]) > 3
    assert grew > 10


def test_cfg_dropout_zeroes_the_whole_context_of_dropped_items_only():
    model = SA3Model.from_config(tiny_config("rectified_flow"))
    prompts = Prompts(model)  # no encoder: empty prompts
    x0 = torch.randn(2, 16, 5)
    keep = torch.zeros(2, 1, 5)
    cond = condition(model, prompts, ["a", "b"], torch.tensor([2.0, 3.0]), keep, x0, torch.tensor([True, False]))
    assert cond.cross_attn_cond.shape == (2, 257, 768)
    assert (cond.cross_attn_cond[0] == 0).all() and (cond.cross_attn_cond[1] != 0).any()
    kept = condition(model, prompts, ["a", "b"], torch.tensor([2.0, 3.0]), keep, x0, None)
    assert torch.equal(cond.global_cond, kept.global_cond)  # the duration's global condition is never dropped
    assert torch.equal(cond.cross_attn_cond[1], kept.cross_attn_cond[1])


def test_inpaint_context_is_the_kept_latents_and_the_mask():
    model = SA3Model.from_config(tiny_config("rectified_flow"))
    x0 = torch.randn(1, 16, 4)
    keep = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    cond = condition(model, Prompts(model), [""], torch.tensor([1.0]), keep, x0)
    assert torch.equal(cond.local_add_cond[:, :1], keep)
    assert torch.equal(cond.local_add_cond[:, 1:], x0 * keep)
