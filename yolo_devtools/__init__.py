"""Development tooling: benchmarks, local stacks, reference and test-data generators (not part of the SDK)."""
