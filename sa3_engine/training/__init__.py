"""Training Stable Audio 3 models: SAME autoencoder, DiT stage 1 (rectified flow), stage 2 (distillation),
stage 3 (adversarial post-training) and LoRA fine-tuning. The recipe is ``docs/training.md``; the CLI is
``sa3 train <stage>`` (``sa3_engine/cli/train.py``)."""
