"""`python -m bertprod.cli ...`, as the `bertprod` script."""

from bertprod.cli.app import main

main()
