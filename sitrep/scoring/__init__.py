"""Offline batch scoring: files in (JSONL, CSV, Parquet), one row per sentence out (Parquet or JSONL).

`sitrep score` streams the input in fixed-size chunks through the shared runtime (models.runtime) and
commits each chunk as one output shard, so a killed job resumes exactly where it stopped
(`engine_local`); `--engine ray` runs the same scoring on a Ray cluster (`engine_ray`).
See sitrep/scoring/README.md.
"""
