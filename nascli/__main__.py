"""`python -m nascli` runs the command line."""

from .cli import main

main()
