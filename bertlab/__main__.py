"""`python -m bertlab` is the same command as `bertlab`."""

from bertlab.train.cli import main

if __name__ == "__main__":
    main()
