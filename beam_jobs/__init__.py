"""Beam pipelines that turn image collections into committed runs of transfer values."""
