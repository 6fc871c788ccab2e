"""``python -m medmm.train`` (and ``torchrun -m medmm.train``): the training side script, ``medmm.training.train``."""

from medmm.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
