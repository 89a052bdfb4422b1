"""Training side of the project: the synthetic dataset (``synth``) and, later, the training stages."""
