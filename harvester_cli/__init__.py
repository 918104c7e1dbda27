"""harvester-cli: PanDA Harvester's job as composable one-shot commands.

The package is built in layers. A module imports from its own room (package) and from the layers below it,
never from a layer above, and two rooms of one layer never import each other (tests/ check this, imports
inside functions included, against the list below):

    __main__                         python -m harvester_cli
    cli, cron                        the frame: the command line (its table names each command), the cron wrapper
    commands                         one click skin per command
    output                           printing: tables on a terminal, plain text under cron, --json
    steps                            what each command does: fetch-jobs, submit, poll, propagate, sweep, cycle
    instance                         what one instance is made of: configuration, state, PanDA client, backends
    backends, state                  where workers run; the state database, every SQL statement
    panda                            the PanDA server: the v1 client, its wire format, the simulator
    site                             the host: credentials, alerts, secret files, logs, the log server, metrics
    config                           the configuration file, its schema and checks
    model, errors, faults            states and transitions, the exceptions, the crash points of the fault suite
"""

__version__ = "0.1.0"
