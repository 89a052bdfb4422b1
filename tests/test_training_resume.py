"""Training stages on a fixed small batch (the loss falls: the gradients reach what they should) and
checkpoints (a resumed run ends in exactly the state of an uninterrupted one)."""

import pytest
import torch

from sa3_engine.training.adversarial_stage import AdversarialSettings, adversarial_stage
from sa3_engine.training.autoencoder_stage import (
    AutoencoderSettings,
    AutoencoderStage,
    build_autoencoder,
    reconstruct,
)
from sa3_engine.training.distill_stage import DistillSettings, distill_stage
from sa3_engine.training.flow_stage import FlowSettings, dit_stage
from sa3_engine.training.folders import write_autoencoder_folder
from sa3_engine.training.latents import LatentDataset
from sa3_engine.training.lora_stage import lora_stage
from sa3_engine.training.runner import decay_scale, generator_for, run
from sa3_engine.training.spectral import stereo_stft_loss
from sa3_engine.weights.tiny import tiny_config, write_tiny_model
from tests.test_training_stages import write_clips

SMALL = {"batch_size": 2, "max_frames": 6, "silence_seconds": 0.2}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    base = write_tiny_model(root / "base", objective="rectified_flow")
    config = tiny_config("rectified_flow")
    ae = write_autoencoder_folder(build_autoencoder(config, 0), config, root / "ae")
    g = torch.Generator().manual_seed(0)
    lengths = [4, 7, 3]
    data = LatentDataset(torch.randn(16, sum(lengths), generator=g), torch.tensor([0, *lengths]).cumsum(0),
                         torch.zeros(16), [["kick loop"], ["bass line", "a bass"], ["riser"]],
                         [n * 4096 / 44100 for n in lengths], 44100, 4096)
    (root / "clips").mkdir()
    return {"root": root, "base": base, "config": config, "ae": ae, "data": data,
            "text": base / "t5gemma-b-b-ul2", "clips": write_clips(root / "clips", 3)}


def fixed_batch_losses(stage, loss_of, steps: int) -> list[float]:
    """Train ``stage``'s parameters on ``loss_of(fresh generator)`` = the same draw every step."""
    out = []
    for _ in range(steps):
        stage.optimizer.zero_grad()
        loss, _ = loss_of(generator_for(7))
        loss.backward()
        stage.optimizer.step()
        out.append(loss.item())
    return out


def test_stage1_flow_loss_falls_on_a_fixed_batch(parts):
    settings = FlowSettings(**SMALL, learning_rate=3e-3)
    stage = dit_stage(parts["config"], parts["ae"], parts["data"], parts["text"], settings)
    losses = fixed_batch_losses(stage, stage.loss, 12)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]


def test_distill_end_point_loss_falls_on_a_fixed_batch(parts):
    stage = distill_stage(parts["base"], parts["data"], DistillSettings(**SMALL, teacher_steps=2, learning_rate=3e-3))
    with torch.no_grad():  # the student starts as a copy of its teacher: move it away first
        stage.trainable["model"].model.transformer.project_out.weight.add_(
            torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) * 0.1)
    losses = fixed_batch_losses(stage, stage.loss, 10)
    assert losses[-1] < 0.7 * losses[0]


def test_lora_flow_loss_falls_with_only_the_adapters_trained(parts):
    stage = lora_stage(parts["base"], parts["data"], FlowSettings(**SMALL, learning_rate=1e-2), rank=4)
    assert all(p.requires_grad == ("lora_" in n) for n, p in stage.trainable.named_parameters())
    losses = fixed_batch_losses(stage, stage.loss, 10)
    assert losses[-1] < 0.8 * losses[0]


def test_autoencoder_reconstruction_loss_falls_on_a_fixed_batch(parts):
    ae = build_autoencoder(parts["config"], 0).train()
    optimizer = torch.optim.Adam(ae.parameters(), lr=1e-3)
    audio = torch.sin(torch.arange(8192 * 2) * 0.05).reshape(1, 2, 8192) * 0.5
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = stereo_stft_loss(audio, reconstruct(ae, audio)[0])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def _final_state(stage) -> dict:
    return {k: v.clone() for k, v in _flat(stage.state_dict()).items()}


def _flat(state, prefix=""):
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[prefix + str(key)] = value
    return out


def assert_resume_is_exact(make, root, steps=4, cut=2, decay_steps=0):
    straight = make()
    run(straight, root / "straight", steps, stream=None, checkpoint_every=100, decay_steps=decay_steps)
    first = make()
    if decay_steps:  # the schedule depends on the total: interrupt a run of ``steps`` after ``cut``
        def kill(step, _losses):
            if step > cut:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run(first, root / "cut", steps, stream=None, checkpoint_every=1, log_every=1, on_log=kill,
                decay_steps=decay_steps)
    else:
        run(first, root / "cut", cut, stream=None)
    resumed = make()
    run(resumed, root / "cut", steps, stream=None, resume=True, decay_steps=decay_steps)
    a, b = _final_state(straight), _final_state(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    return resumed


def test_stage1_resumes_to_the_identical_state(parts, tmp_path):
    assert_resume_is_exact(lambda: dit_stage(parts["config"], parts["ae"], parts["data"], parts["text"],
                                             FlowSettings(**SMALL)), tmp_path)


def test_adversarial_stage_resumes_to_the_identical_state(parts, tmp_path):
    assert_resume_is_exact(lambda: adversarial_stage(parts["base"], parts["base"], parts["data"],
                                                     AdversarialSettings(**SMALL)), tmp_path, steps=3, cut=1)


def test_decay_schedule_is_constant_then_linear_to_zero():
    assert [decay_scale(step, 10, 0) for step in (0, 9)] == [1.0, 1.0]
    assert [decay_scale(step, 10, 4) for step in (0, 6, 7, 9)] == [1.0, 1.0, 0.75, 0.25]


def test_decay_lowers_every_optimiser_of_a_stage_and_resumes_exactly(parts, tmp_path):
    settings = AdversarialSettings(**SMALL)
    stage = assert_resume_is_exact(lambda: adversarial_stage(parts["base"], parts["base"], parts["data"], settings),
                                   tmp_path, steps=3, cut=1, decay_steps=2)
    # the last step ran at half the rate: (3 - 2) / 2 of each optimiser's own initial rate
    assert stage.g_optimizer.param_groups[0]["lr"] == pytest.approx(settings.learning_rate / 2)
    assert stage.d_optimizer.param_groups[0]["lr"] == pytest.approx(settings.critic_learning_rate / 2)


def test_autoencoder_stage_resumes_to_the_identical_state(parts, tmp_path):
    from sa3_engine.training.clips import list_clips

    clips = list_clips(parts["clips"])
    settings = AutoencoderSettings(batch_size=1, crop_frames=2, adversarial_weight=0.1, stft_start=1)
    assert_resume_is_exact(lambda: AutoencoderStage(parts["config"], clips, [], settings), tmp_path, steps=3, cut=1)


def test_stage1_refuses_to_start_without_the_text_encoder_its_model_must_contain(parts):
    with pytest.raises(FileNotFoundError, match="--text-encoder"):
        dit_stage(parts["config"], parts["ae"], parts["data"], None, FlowSettings(**SMALL))
