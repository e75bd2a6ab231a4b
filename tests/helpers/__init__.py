"""What tests share, in one package: running commands and the driver (`commands`, `driver`),
phase settings (`settings`), the Azure target under Pulumi's mocks (`azure_mocks`), loopback
stand-ins for Azure's endpoints (`stand_in`), waiting (`waiting`), app specs (`specs`), a
stack's PostgreSQL (`postgres`) and changes to a PostgreSQL restore point on disk
(`restore_points`).
Fixtures live in tests/conftest.py; a test module imports helpers, never another test module."""
