"""``tunesmith plan``: memory estimates for a training configuration, the cheapest one that
fits, and an advisor that says whether fine-tuning is the right tool at all."""
