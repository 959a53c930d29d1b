"""Hyper-parameter searches with Optuna: search specs, the study's storage, and its trials."""
