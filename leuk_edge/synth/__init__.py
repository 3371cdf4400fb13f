"""Synthetic stand-in data (numpy + OpenCV only, no TensorFlow): C-NMC-layout cells and microscope fields.

Serves tests, export's fallback gate images, the stream demo and the station; a plain install can write them.
"""
