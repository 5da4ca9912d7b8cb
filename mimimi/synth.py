"""``python -m mimimi.synth``: the synthetic dataset generator's CLI (see ``mimimi.data.synth``)."""
from mimimi.data.synth import main

if __name__ == "__main__":
    raise SystemExit(main())
