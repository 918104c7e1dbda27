from harvester_cli.cli import main

main()
