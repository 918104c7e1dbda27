"""The PanDA side: the v1 API client (`client`), pilot outputs turned into job updates (`pilot_outputs`),
worker diagnostics as PanDA error codes (`diagnostics`), resource type definitions and worker sizes
(`resource_types`), and `sim`, the PanDA server simulator with its test PKI and test pilot.

Imports config, model and errors only (the simulator's PKI also uses site.proxies to make proxies);
never the state database, a step or a backend.
"""
