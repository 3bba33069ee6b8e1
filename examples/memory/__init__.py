"""Associative memory: a generative PC network stores images and retrieves them from cues."""
