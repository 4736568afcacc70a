"""Float executors: the references ``verify`` and ``compile`` measure the fixed-point network against.

``ir`` runs a float graph IR (float64), ``torch_model`` our checkpoint's PyTorch network,
``torch_source`` the user's own PyTorch module one call per step, ``nir_graph`` a NIR graph
as NIR defines it. Each returns a :class:`~lmh_deploy.backends.record.RunRecord`.
"""
