"""`python -m dispatcher` runs the `canhbao` command line."""

from dispatcher.cli import main

main()
