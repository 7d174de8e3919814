"""Offline chat through llama.cpp: sessions, chat templates, measured stats, settings.

``session`` loads a model with a fit check and streams answers with KV-cache
reuse between turns; ``templates`` turns conversations into prompts (the
model's own template in a sandbox, built-in family templates, raw mode);
``stats`` measures each answer; ``settings`` keeps sampling and load choices
per model. Nothing here imports Qt.
"""
