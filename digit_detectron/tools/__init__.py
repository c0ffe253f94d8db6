"""
The logic of the ``digit-detectron`` subcommands that run a model or check data (train, eval, predict, tune,
visualize, benchmark, check, export, bundle): each module has ``get_parser()`` and ``main(argv=None)``.
``tools/<name>.py`` in the repository are thin wrappers around them, the detectron2 way.
"""
