"""Catastrophic forgetting: a general-ability probe, a budget guard, EWC/L2 anchoring."""
