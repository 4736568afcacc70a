"""backends/lava."""
