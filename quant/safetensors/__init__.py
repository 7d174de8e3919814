"""Safetensors checkpoints: the one reader of their headers (:mod:`quant.safetensors.header`).

It sits in the engine's lowest layer so the converter and the model facts read
headers the same way.
"""
