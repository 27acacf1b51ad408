"""Prints the import graph of disco_detr folded to packages, and every import cycle among its modules.

    python tools/module_graph.py                 # packages two levels deep (disco_detr.modeling, ...)
    python tools/module_graph.py --depth 3       # disco_detr.modeling.layers, ...

The graph is read from the source (:mod:`disco_detr.tooling.module_graph`); tests/test_architecture.py
checks the layering rules on the same graph. Exits 1 when there is a cycle.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "projects", "DisCoDETR", "disco_detr")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2, help="dotted parts of a package name (default 2)")
    parser.add_argument("--package", default=PACKAGE, help="the package folder to read (default: disco_detr)")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(PACKAGE))  # the builder is a plain file of the package: no install needed
    from disco_detr.tooling.module_graph import cycles, import_graph, package_graph

    graph = import_graph(args.package)
    for source, targets in sorted(package_graph(graph, args.depth).items()):
        if targets:
            print(f"{source} -> {', '.join(sorted(targets))}")
    found = cycles(graph)
    for cycle in found:
        print("cycle:", " <-> ".join(cycle))
    print(f"{len(graph)} modules, {len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
