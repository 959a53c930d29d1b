"""MinD-Video: fMRI-to-video decoding, as a library of data, models, stages and metrics."""

__version__ = "0.1.0"
