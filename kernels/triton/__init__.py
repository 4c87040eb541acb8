"""attprune's Triton kernels, installed as ``attprune.kernels`` (see pyproject.toml).

Each kernel sits beside its PyTorch reference in ``attprune/ops/reference.py`` and is
tested against it (tests/test_kernels.py). Import only through ``attprune.ops``, which
checks that a device (or TRITON_INTERPRET=1) is there first.
"""
