"""Replicas of published checkpoints: the hub's file names, config fields, tokenizer classes and
preprocessor configs, with small random weights, installed in a private Hugging Face cache.

They let offline tests load a hub name through the production loader and compare it with what
open_clip or transformers compute from the same files. Nothing here carries trained weights.
"""
