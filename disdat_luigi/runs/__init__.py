"""A node's lifecycle on the remote: its run record and lease, who owns it (owner.py), running it or waiting for
its job (execute.py), submitting a graph (submit.py), what runs in its container (entrypoint.py), and its
history (history.py)."""
