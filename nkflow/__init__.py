"""nkflow: audited day-14 donor NK expansion endpoints from raw FCS files.

The package computes; the Snakemake workflow orchestrates; ``nkflow.cli`` adapts.
Heavy libraries (FlowKit, pandas, matplotlib) are imported lazily inside functions
so that ``nkflow --help`` starts fast.
"""

__version__ = "0.1.0"
