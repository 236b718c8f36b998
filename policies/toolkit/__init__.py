"""The shared adapter toolkit: what every VLA family needs, in one place.

- :mod:`.device`: device and dtype selection (``auto`` = CUDA when present).
- :mod:`.safe_load`: safetensors, ``torch.load(weights_only=True)``, and an explicit opt-in
  restricted unpickler for stats files that only exist as pickles (TinyVLA's ``dataset_stats.pkl``).
- :mod:`.lora`: folding LoRA deltas into base weights with alpha and r from the adapter's own
  ``adapter_config.json`` (or given explicitly where a family fixes them).
- :mod:`.transforms`: image steps as small named callables (reference orientation, JPEG round
  trip, TF lanczos3, PIL bicubic, openpi's resize-with-pad, CLIP's expand-to-square).
- :mod:`.tf_image`: TensorFlow's JPEG round trip, antialiased lanczos3 resize and center crop,
  bit-exact in numpy/numba (OpenVLA's image path; any TF-trained family's).
- :mod:`.norm_stats`: normalisation statistics that declare their kind (bounds q01/q99,
  mean/std, min/max), checked against what a family expects when it loads.

Nothing here imports torch at module import time except :mod:`.device`, :mod:`.safe_load`
and :mod:`.lora`, which need it anyway.
"""
