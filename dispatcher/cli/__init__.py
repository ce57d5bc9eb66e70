"""The command-line face: one module per command group, the composition root in `app.py`."""
