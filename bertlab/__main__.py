"""`python -m bertlab` is the same command as `bertlab`."""

from bertlab.command import bertlab_main

if __name__ == "__main__":
    bertlab_main()
