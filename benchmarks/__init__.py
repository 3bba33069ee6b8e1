"""The benchmarks; importable as ``benchmarks`` from an editable checkout."""
