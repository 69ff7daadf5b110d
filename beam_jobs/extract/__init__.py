"""`tv-extract`: images → decoded, deduplicated, split → backbone → committed run of shards."""
