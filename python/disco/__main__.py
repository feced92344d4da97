"""``python -m disco``: the ``disco`` command (also under ``torchrun`` and ``accelerate launch``)."""

from disco.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
