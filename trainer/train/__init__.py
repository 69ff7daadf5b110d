"""`tv-train`: fit a head on committed runs, keep the best epoch, evaluate on test, export."""
