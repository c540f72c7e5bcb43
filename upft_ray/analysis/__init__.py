"""Measurements on the model's own samples: prefix self-consistency, error localisation."""
