"""`python -m planner.cli ...`: the same as the `serveplan` command."""

from planner.cli import main

main()
