"""`python -m anet` is the `anet` command."""

from .cli import main

main()
