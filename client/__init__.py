"""The command-line client for the deployed functions (``python -m client``).

Calls by name or URL, and the tools around them.
"""
