"""The commands of part_tf: `part-train`, `part-evaluate`, `part-compare`,
`part-benchmark` and `part-visualize` (also `python scripts/<name>.py`)."""
