"""modelhangar as a registry client: pulling models from and pushing them to OCI registries."""
