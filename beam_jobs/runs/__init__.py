"""Committed runs: read, commit, verify, list and gc (`tv-runs`); the Beam sinks that write them."""
