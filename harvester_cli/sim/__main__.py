from harvester_cli.sim.server import main

main()
