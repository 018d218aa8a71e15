"""What a finished run serves its users: the submission (predict), the Python API, HTTP, and
an exported scorer."""
