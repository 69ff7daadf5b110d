"""Pass 2 of the extract job: the graph's stages (views, inference, TFT analysis)."""
