"""Reading training data (formats.py) and auditing it (audit*.py)."""
