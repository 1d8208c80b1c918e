"""The command line's sub-commands, the top layer of the package.

Each module exposes ``register(subparsers)`` and may use every package below it (data, train,
experiments, report); nothing below imports from here. Heavy packages are imported inside the
handlers, so ``autoloss --help`` starts without torch.
"""
