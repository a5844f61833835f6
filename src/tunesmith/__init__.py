"""tunesmith: take a pre-trained language model and a dataset, produce a better model for one job."""

__version__ = "0.1.0"
