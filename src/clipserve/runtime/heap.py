"""Keep Python's cyclic garbage collector off the objects that live as long as the process.

After the model, the tokenizer's vocabulary, torch, SQLAlchemy and pydantic are loaded, the process holds about
half a million objects for good. The collector's oldest generation scans all of them whenever enough new objects
have survived, holding the GIL for about 240 ms on a 2-core box: every request stalls, and a client that makes
the server allocate (many cheap requests) chooses how often. `gc.freeze()` once warm (the approach of Instagram's
Django servers, and what the gc module documents it for) moves them to a permanent generation the collector
never scans, so a full collection costs only what requests created since.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collect what is garbage now, then exempt everything alive from future collections; how many objects."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze() -> None:
    """Give the frozen objects back to the collector (at shutdown, so an embedding process can free them)."""
    gc.unfreeze()
