"""The command-line layer every `tv-*` command shares: launch, flags, `--config`, errors, progress."""
