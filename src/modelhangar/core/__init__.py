"""The model store core: names, digests, catalog, blob store, deletion planner, GC. No HTTP here."""
