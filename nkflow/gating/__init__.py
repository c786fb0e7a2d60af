"""Gating engine: YAML gate trees, exact fast evaluation, Gating-ML/FlowJo interchange.

Contract
--------
Public API (stable names used by the per-tube pipeline)::

    tree = load_tree(path)                        # GateTree, ConfigError naming file + gate
    res = gate_sample(tree, events, marker_index, spill=None, keep=None, controls=None)
    res.membership(pop); res.count(pop); res.not_computed; res.flags; res.counts_table()
    to_gatingml(tree, path); from_gatingml(path); from_flowjo_wsp(path, sample_id, group)
    to_flowkit(tree, channel_names=None, thresholds=None, spill=None)  # FlowKit strategy
    write_tree(tree, path)                        # YAML, read back by load_tree

Importing this package is light: FlowKit, pandas and scikit-learn are imported inside the
functions that need them.
"""

from nkflow.gating.evaluate import GatingResult, control_values, fmo_values, gate_sample
from nkflow.gating.flowjo import from_flowjo_wsp
from nkflow.gating.gatingml import from_flowkit, from_gatingml, to_flowkit, to_gatingml
from nkflow.gating.tree import (
    AutoSpec,
    Dim,
    Gate,
    GateTree,
    Population,
    load_tree,
    tree_from_dict,
    tree_to_dict,
    write_tree,
)

__all__ = [
    "AutoSpec",
    "Dim",
    "Gate",
    "GateTree",
    "GatingResult",
    "Population",
    "control_values",
    "fmo_values",
    "from_flowjo_wsp",
    "from_flowkit",
    "from_gatingml",
    "gate_sample",
    "load_tree",
    "to_flowkit",
    "to_gatingml",
    "tree_from_dict",
    "tree_to_dict",
    "write_tree",
]
