"""tunesmith: turn a pre-trained language model and a dataset into a better model for one job."""

__version__ = "0.1.0"
