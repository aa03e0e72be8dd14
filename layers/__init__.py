"""tfsuite layers: the textbook's chapters as custom Keras 3 layers and models.

One module per chapter topic, for example ``layers.activations`` (section 1.2),
``layers.normalization`` (1.3), ``layers.optimizers`` (1.4),
``layers.convolution`` (2.1), ``layers.recurrent`` (3.1-3.5). Every layer is
registered for Keras serialization under the ``tfsuite`` package.
"""
