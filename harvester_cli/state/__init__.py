"""The state database: its tables (`schema`), the store with transactions, claims with leases and the
outbox for PanDA (`store`), the job-side state transitions the steps share (`transitions`), read-only
views (`views`), and the schema's migrations (`upgrade`, `migrations/`, the only users of Alembic).

Imported by the steps and the commands; imports config, model, errors and panda.pilot_outputs (to queue
PanDA updates), never a step, a backend or a command.
"""
