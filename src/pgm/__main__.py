"""`python -m pgm` is the same as the `pgm` command."""

from pgm.cli import main

main()
