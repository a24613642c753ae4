"""absl flag definitions of the part_tf scripts."""
