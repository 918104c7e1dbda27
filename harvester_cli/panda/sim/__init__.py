"""The PanDA server simulator (`server`, run alone with `python -m harvester_cli.panda.sim`), its test PKI
(`certs`) and the small test pilot (`pilot`) that demo and the tests run as workers."""
