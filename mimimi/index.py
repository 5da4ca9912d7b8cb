"""``python -m mimimi.index ROOT``: print what a dataset root holds (see mimimi.data.index)."""
from mimimi.data.index import main

if __name__ == "__main__":
    main()
