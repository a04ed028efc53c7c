"""The `hangar` command line: model commands over the server's HTTP API, store commands in-process."""
