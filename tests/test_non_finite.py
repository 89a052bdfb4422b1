"""NaN and inf never reach a file or a mix: guidance is bounded, and every output is checked."""

import numpy as np
import pytest
import torch

from bridge.timeline import TempoMap
from plugin_shell.testhost import Arrangement
from sa3_engine import wav
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.generation.request import MAX_CFG_SCALE


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.load("tiny-random")


@pytest.mark.parametrize("cfg_scale", [1e308, MAX_CFG_SCALE + 0.5])
def test_cfg_scale_above_the_documented_maximum_is_refused(pipe, cfg_scale):
    with pytest.raises(ValueError, match=rf"^cfg_scale: .*at most {MAX_CFG_SCALE:g}"):
        pipe.generate("x", duration=0.2, steps=1, cfg_scale=cfg_scale, negative_prompt="y")
    assert MAX_CFG_SCALE >= 7  # the base models' default still fits


def test_a_model_that_outputs_nan_raises_instead_of_returning_it(tmp_path):
    """A broken model (a NaN weight, as a corrupt fine-tune could leave) must not produce a result."""
    pipe = Pipeline.load("tiny-random")
    with torch.no_grad():
        next(pipe.model.dit.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="NaN or infinite"):
        pipe.generate("x", duration=0.2, steps=1, seed=1)


def test_a_clip_holding_nan_never_reaches_the_mix(tmp_path):
    bad = np.zeros((2, 4800), np.float32)
    bad[0, 100] = np.nan
    wav.write_wav_file(tmp_path / "nan.wav", bad, 48000, "float")  # a float file made elsewhere
    host = Arrangement(48000, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    host.add_clip("t", tmp_path / "nan.wav", start=0)
    with pytest.raises(ValueError, match="nan.wav.*NaN or infinite"):
        host.mix()
    with pytest.raises(ValueError, match="NaN or infinite"):
        host.render(tmp_path / "mix.wav")
    assert not (tmp_path / "mix.wav").exists()


def test_the_protocol_refuses_the_same_cfg_scales_as_the_pipeline():
    from bridge.protocol import REQUESTS

    for kind in ("generate", "inpaint", "extend", "variation"):
        field = REQUESTS[kind]["cfg_scale"]
        assert (field.minimum, field.maximum) == (0, MAX_CFG_SCALE), kind
