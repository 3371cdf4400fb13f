"""leuk-edge: train, export and run at the edge a screening aid for acute lymphoblastic leukemia.

Research and engineering use only. leuk-edge is NOT a diagnostic device; its outputs must not be used
to diagnose, treat or exclude disease.
"""

__version__ = "0.1.0"

DISCLAIMER = "Research use only - not a diagnostic device; do not use for diagnosis or treatment."
SYNTHETIC_NOTE = "Synthetic stand-in data: figures say nothing about real patients."
CLASSES = ("hem", "all")  # index 0 = normal (hem), index 1 = leukemic blast (all); models output P(all)
