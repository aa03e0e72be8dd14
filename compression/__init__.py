"""Model compression (textbook section 11.1): training and conversion procedures, not layers.

* ``compression.release``: a released app model (SavedModel + MANIFEST config)
  rebuilt as a Keras network, the original every method is measured against.
* ``compression.distillation``: knowledge distillation, ``Distiller`` and
  ``distillation_loss`` (soft targets at a temperature, mixed with the hard loss).
* ``compression.pruning``: gradual magnitude pruning, ``PolynomialSparsity``
  (Zhu & Gupta) and the ``MagnitudePruning`` callback that keeps masks
  through fine-tuning; sparsity and stored (gzip) size.
* ``compression.quantization``: TFLite post-training quantization
  (dynamic-range int8, full-integer int8, float16) and quantization-aware
  training (``FakeQuant``, ``QuantizeWrapper``, ``quantize_model``).

``benchmarks/compression.py`` applies each to the Fashion-MNIST release and
prints size, latency and accuracy against the original in one table.
"""
