"""The llama.cpp generator: settings, request/response models and the generation core.

``handler.py`` beside this package wires them to Lambda: direct invokes and
Function URL routes.
"""
