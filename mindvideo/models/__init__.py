"""Models: fMRI MAE, spatiotemporal encoder, inflated UNet and the decoding pipeline."""
