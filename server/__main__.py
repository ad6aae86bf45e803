"""`python -m server` runs the same as `ttc-server`."""

from server.cli import main

main()
