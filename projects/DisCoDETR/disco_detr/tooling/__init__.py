"""Offline tooling behind tools/: the demo image renderer, proposal generation, the module graph.

Nothing in the runtime packages (data, modeling, engine, checkpoint, model_zoo, convert,
evaluation) imports from here; tooling imports the runtime freely.
"""
