"""Pure decisions: no I/O, no clocks (time is an argument), no globals, seeded randomness only.

Nothing here imports another tiergate package or a library that does I/O; `tests/test_layering.py` checks it.
"""
