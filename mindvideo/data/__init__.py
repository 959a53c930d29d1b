"""Datasets: the SynthCC simulator, CC2017 / MinD-Video / HCP loaders, preprocessing, windows."""
