"""The ``vidseg`` command line: a thin layer over the Python API.

Each sub-command module defines ``register(subparsers)``, which adds its parser and sets
``func=run`` where ``run(args) -> int``. Modules import heavy libraries (torch) inside ``run`` so
that ``vidseg --help`` stays fast.
"""
