"""The on-disk layout of a committed run, and of the folders around it: one home for every name.

```
<out>/runs/<run_id>/   shards, parquet/, labels.txt, schema.pbtxt, transform_fn/, dead_letters/,
                       manifest.json, _SUCCESS (written last: the commit)
<out>/jobs/<job_id>/   job.json (written last), plan/, _HEARTBEAT   (chunked extract jobs)
```
Readers and writers (beam_jobs.runs, the extract job, batch prediction, the trainer) take these
names from here; the record inside the shards is `schemas.record`.
"""

RUNS_DIR = "runs"
SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
LABELS = "labels.txt"
METADATA_SCHEMA = "schema.pbtxt"  # the TFMD schema of the record (schemas.metadata_schema)
PARQUET_DIR = "parquet"
DEAD_LETTERS_DIR = "dead_letters"
TRANSFORM_FN = "transform_fn"  # tft_beam.WriteTransformFn's folder; TFTransformOutput(run.path)
STATS_FILE = "_stats"  # transient: folded into manifest.json by the commit, then deleted

# Chunked extract jobs keep their plan beside the runs they commit.
JOBS_DIR = "jobs"
JOB_FILE = "job.json"  # written last: a job folder without it holds no usable plan
HEARTBEAT = "_HEARTBEAT"
PLAN_DIR = "plan"
