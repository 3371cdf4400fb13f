"""Synthetic stand-in data (numpy + OpenCV only, no TensorFlow): C-NMC-layout cells, microscope fields, and
out-of-scope cells (others.py: for tests and evaluation only, never for training).

Serves tests, export's fallback gate images, the stream demo and the station; a plain install can write them.
"""
