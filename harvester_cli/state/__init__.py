"""The state database, and every SQL statement harvester-cli runs.

`schema` declares the tables; `store` opens the database and hands out transactions (`Tx`), retries a
transaction another host's deadlocked, and refuses a database this code cannot use. Each other module is
one table or concern, as plain functions named for what they mean, taking the open transaction:
`workers`, `jobs` (with their link to workers), `outbox` (what still has to reach PanDA), `commands`
(PanDA's commands as received), `targets` (pilot-streaming numbers), `registrations`, `locks` (named
leases), `claims` (rows claimed with leases), `meta` (worker ids), `monitoring` (snapshots, command runs,
counters) and `views` (read-only, for status, workers and jobs). `upgrade` and `migrations/` are the only
users of Alembic.

Layer: imported by the steps, the instance and the commands; imports config, model and errors (and site's
`logs.make_dirs`: the SQLite file's directory whatever the umask). Never
panda (the steps build PanDA's updates and hand them over as data), a backend, a step or a command.
"""
