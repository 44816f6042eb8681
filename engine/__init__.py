"""The flashtx domain core: pure, synchronous, no I/O.

Every business rule lives here; actors only route, batch, await and persist.
"""
