"""modelhangar's own API (`/api/hangar/...`): previews, bulk delete, trash, usage, audit, GC."""
