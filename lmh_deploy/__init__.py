"""lmh-deploy: compile LM-H spiking networks from PyTorch to Lava and Loihi 2.

The pipeline, one module per stage::

    models (PyTorch) -> export (IR) -> quantize -> lower (Lava) -> run (Lava | sim) -> report
"""
from lmh_deploy import _lava_compat

_lava_compat.install()

__version__ = "0.1.0"
