"""`python -m anet` is the `anet` command."""

from .launch import main

main()
