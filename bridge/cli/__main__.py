"""``python -m bridge.cli``: the same command line as the ``bridge`` script."""

from bridge.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
