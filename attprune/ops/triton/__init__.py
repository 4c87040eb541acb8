"""attprune's Triton kernels: ``ig_attribute`` (the fused attribute step) and ``ig_interpolate``.

Each sits beside its PyTorch reference (``attprune/ops/reference.py``) and is tested against
it on odd shapes (tests/test_kernels.py). Import them through ``attprune.ops``, which checks
that Triton is installed and a GPU (or ``TRITON_INTERPRET=1``) is there first: importing this
package defines the kernels, and the interpreter must be on before that.
"""
