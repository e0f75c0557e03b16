"""The platform's Spark batch jobs: ``embed`` (backfill embedding) and ``aggregate`` (analytics
aggregates), plus ``venvs``, the builder of their cached environments. See jobs/README.md."""
