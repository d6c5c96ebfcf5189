"""Captioners, keyword extraction, bag manifests and torch datasets reading bags from slides."""
