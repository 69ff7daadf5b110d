"""The serving export (one SavedModel) and `tv-predict`, its command."""
