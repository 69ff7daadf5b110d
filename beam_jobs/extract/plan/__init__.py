"""Pass 1 of the extract job: splits and de-duplication, chunks, incremental skipping."""
