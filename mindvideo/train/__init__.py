"""Training loops shared by stages: masked brain modelling, and the video diffusion
fine-tuning of co-training and video pretraining."""
