"""Temporal predictive coding: tracking a noisy system, memorising sequences of digits."""
