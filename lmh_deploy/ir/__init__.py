"""The graph IR: small declarative nodes on a networkx DAG, serialised as JSON + npz."""
from lmh_deploy.ir._all import *  # noqa: F401,F403
from lmh_deploy.ir._all import (FLOAT_KINDS, NODE_TYPES, SYNAPSE_KINDS, AvgPool, Conv2d, Dense,  # noqa: F401
                                Graph, Input, IRError, LMH, Node, QDense, QInput, QLMH, QReadout,
                                Readout, conv_output_hw, load_graph, save_graph, validate)
