"""Run both functions on localhost as Lambda runs them (``python -m local``)."""
