"""The embedding service behind handler.py: settings, backends, the core and its request models.

A package (not loose modules beside handler.py) so its names never collide
with the other function's modules when both run in one test process.
"""
