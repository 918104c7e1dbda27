"""The library behind each command: one module per cycle step (`fetch_jobs`, `submit` with its pure
`planner`, `poll`, `propagate`, `sweep`), `cycle` which chains them, `demo`, and `instance`, which wires a
configuration to its state database, PanDA client and backends.

Imported by the commands (and by scripts and tests that drive the library directly); imports the layers
below: state, panda, backends, site, and config, model, errors. A step never imports a command.
"""
