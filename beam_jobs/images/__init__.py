"""Image decoding and resizing, shared by extraction, batch prediction and the serving model."""
