"""The OpenSearch face: ML Commons' model-management API (`/_plugins/_ml`), pipelines, cluster settings
and a node's `GET /`, over the same store as every other face; the rules live in `core/ml_models.py`."""
