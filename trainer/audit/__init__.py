"""`tv-audit`: label issues, near duplicates and outliers of committed runs."""
