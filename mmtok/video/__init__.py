"""Video: container probe (PyAV demux), frame-exact decoding (decord fast path, PyAV reference).

Heavy libraries (av, decord) are imported inside the functions that use them.
"""
