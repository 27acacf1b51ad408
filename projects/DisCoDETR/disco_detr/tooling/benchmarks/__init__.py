"""The logic of tools/benchmarks/: one module per benchmark, each with its own ``main(argv)``."""
