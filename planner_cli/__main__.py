from planner_cli.cli import main

main()
