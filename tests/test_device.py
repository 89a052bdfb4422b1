"""device.py: dtype choice for the DiT and the autoencoder, and what the engine reports about its device."""

from __future__ import annotations

import pytest

from sa3_engine.runtime.device import describe, pick_autoencoder_dtype, pick_dtype


def test_the_autoencoder_defaults_to_float32_on_every_device():
    assert pick_dtype("cpu") == "float32"
    assert [pick_autoencoder_dtype(x) for x in (None, "", "auto", "bf16", "float16")] == [
        "float32", "float32", "float32", "bfloat16", "float16"]
    with pytest.raises(ValueError, match="--dtype"):
        pick_autoencoder_dtype("int8", "--dtype")


def test_describe_reports_the_attention_kernel():
    info = describe("cpu")
    assert info["device"] == "cpu" and info["attention"] == "sdpa"
