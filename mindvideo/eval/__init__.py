"""Evaluation: metric protocols, judges and benchmark validation."""
