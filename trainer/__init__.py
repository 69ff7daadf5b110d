"""Fit, evaluate and export a classification head on committed runs of transfer values."""
