"""Losses: pure functions ``(tensors, hyperparameters) -> (loss, metrics)``."""
