"""The Replicate face: Replicate's models, versions, predictions, trainings and deployments API (`/v1`),
for the `replicate` Python client 1.0.7 pointed at the server's root URL. Policy lives in
`core/replicate_models.py`; this package only maps HTTP to it and its answers to Replicate's JSON."""
