"""The `speed` section and its kernels: what changes how fast a run goes, never what it computes.

The device resolver (`settings`, `auto` decided at run time from what the device has), the fused
MLM loss, fast dropout, the bf16 working copy, the allocator, and the one source of FLOPs and of
the matrix-product peak they are measured against.

May import: nothing else in bertlab.
"""
