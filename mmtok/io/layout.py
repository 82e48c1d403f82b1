"""Where things sit in an mmtok output folder.

Kept rows are the only Parquet files at the top (`part-NNNNN.parquet`), so every reader that is
pointed at the folder (Hugging Face `datasets`, pandas, polars, DuckDB, pyarrow) sees exactly the
kept rows. Everything else (manifest, rejects, clusters, budget report) lives in `SIDE_DIR`: a
name that starts with two underscores is skipped by `datasets` (special folder), by pyarrow,
Spark and Hive (leading underscore), and by `OUT/*.parquet` globs (a sub-folder).

Folders written before this layout have `manifest.json` and `rejects.parquet` at the top;
readers accept both.
"""

SIDE_DIR = "__mmtok__"
MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.parquet"
CLUSTERS_FILE = "clusters.parquet"
BUDGET_FILE = "budget.json"
VIDEOS_FILE = "videos.parquet"
