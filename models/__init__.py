"""LM-H spiking network models and the data they are trained on."""
