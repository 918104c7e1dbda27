from harvester_cli.panda.sim.server import main

main()
