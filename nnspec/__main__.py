"""``python -m nnspec``: the command line, as the ``nnspec`` script runs it."""

from nnspec.backends.cli import main

if __name__ == "__main__":
    main()
