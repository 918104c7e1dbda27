"""The PanDA side, and the only package that knows PanDA's field names: the v1 API client with typed answers
(`client`), the typed job (`jobs`), everything harvester-cli tells PanDA in PanDA's words (`updates`),
PanDA's commands typed and interpreted (`commands`), pilot outputs turned into the final job update
(`pilot_outputs`), worker diagnostics as PanDA error codes (`diagnostics`), resource types and worker sizes
(`resource_types`), activated-job counts (`job_counts`), and `sim`, the PanDA server simulator with its test
PKI and test pilot.

Layer: imported by the steps, the instance, the backends (the typed job, the pilot's file names) and the
commands; imports site, config, model and errors only (the simulator's PKI makes proxies with
site.proxies); never the state database, a step or a backend.
"""
