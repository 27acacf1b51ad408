"""Offline tooling behind tools/: the logic of each tool (``tools/<path>.py`` calls ``main`` of
``disco_detr/tooling/<path>.py``; benchmarks/ and convert/ as in tools/), the demo image renderer,
the proposal algorithms and the module graph.

Nothing in the runtime packages (data, modeling, engine, checkpoint, model_zoo, convert,
evaluation) imports from here; tooling imports the runtime freely.
"""
