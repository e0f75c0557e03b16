"""Property-based tests (Hypothesis) and schema-driven fuzzing (Schemathesis).

Every property runs a bounded number of examples (``FUZZ``) with no deadline, and keeps no
example database (nothing written into the checkout): a failure prints the example and the
``@reproduce_failure`` line to replay it. The examples are random on each run, so a run may
find what earlier ones did not; the module stays well under a minute."""
