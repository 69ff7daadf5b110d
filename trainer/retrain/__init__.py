"""`tv-retrain`: extract the new images, train a challenger, promote it only if better."""
