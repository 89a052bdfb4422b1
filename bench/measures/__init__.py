"""Measurements of the default model (``bench/measure_default_model.py``).

- ``signal``: the estimators on audio alone (tempo, key, tonal vs noisy, clicks, loop seams); librosa
  where an independent implementation exists, ours (labelled) where none does;
- ``data``: prompts with their ground truth and reference clips, from the synthetic generator's own
  caption machinery, on seeds disjoint from the training set's;
- ``classifier``: a category classifier trained on synthetic clips (scikit-learn);
- ``runs``: what is asked of a model (generate, inpaint, extend, timing), through ``Pipeline`` as
  ``sa3 generate | inpaint | extend`` call it;
- ``judge``: the estimators applied to synthetic ground truth (their own accuracy) and to a model's output;
- ``report``: ``results.md`` and the spectrogram pictures.
"""
