"""The registry face: the OCI distribution API (`/v2/`) over the same store as every other face."""
