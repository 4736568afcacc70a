"""Max pooling of synaptic currents as a Lava Process (process.py) with floating_pt and
fixed_pt models (models.py)."""
