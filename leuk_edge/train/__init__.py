"""Training on the C-NMC layout with Keras 3 / TensorFlow. Submodules import TensorFlow lazily where they can,
so `leuk-edge data synth` and `data inspect` work without it."""
