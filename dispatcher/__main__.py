"""`python -m dispatcher` runs the `canhbao` command line."""

from dispatcher.cli.app import main

main()
