"""The smooth-deploy Pulumi program: `zdd:phase` decides what exists, the target how it is built."""

from __future__ import annotations

import pulumi

from infra.config import phase_guard, read_settings
from infra.program import build
from infra.targets import target_for
from zdd import registry

config = pulumi.Config("zdd")
settings = read_settings(config)
target = target_for(config)
guard = phase_guard(
    settings.stack.phase,
    switches_in_program=registry.entry(target.name).switches_in_program,
)
built = build(settings.declaration, target, pulumi.ResourceOptions(depends_on=[guard]))

pulumi.export("phase", str(settings.stack.phase))
pulumi.export("settings_digest", settings.digest)
pulumi.export("database_generation", settings.declaration.primary_database_generation)
pulumi.export("target", target.name)
pulumi.export("traffic", str(settings.declaration.traffic))
pulumi.export("current_version", settings.stack.current_version)
pulumi.export("target_version", settings.stack.target_version)
pulumi.export("primary_version", settings.declaration.primary.version)
pulumi.export("mode", str(settings.stack.mode))
pulumi.export("strategy", str(settings.stack.strategy))
# The restore point as its resource recorded it when taken, not as the config names it.
pulumi.export("restore_point", built.primary_database.restore_point_taken)
pulumi.export("primary_url", built.primary.url)
pulumi.export("clone_url", built.clone.url if built.clone else None)
pulumi.export("primary_database", built.primary_database.database_name)
# A cloud database's resource id: the driver reads its backups' restorable range there.
pulumi.export("primary_database_id", getattr(built.primary_database, "database_id", None))
pulumi.export(
    "clone_database", built.clone_database.database_name if built.clone_database else None
)
pulumi.export("clone_archive", built.clone_database.archive if built.clone_database else None)
# A read-only clone's database must still hold this when it is destroyed (rule 9 of docs/design.md).
pulumi.export(
    "clone_database_digest", built.clone_database.copy_digest if built.clone_database else None
)
# A local stack's PostgreSQL server (port, programs, role passwords as secrets): the driver
# reads the clone's digest through it.
pulumi.export("database_server", getattr(built.primary_database, "server_outputs", None))
# The clone's own PostgreSQL server, and its database's name there.
pulumi.export("clone_database_server", getattr(built.clone_database, "server_outputs", None))
pulumi.export("public_url", built.front_door.public_url)
pulumi.export("preview_url", built.front_door.preview_url)
# Locally the driver reads the drain from HAProxy's counters, over its admin socket.
pulumi.export("front_door_socket", getattr(built.front_door, "admin_socket", None))
# On Azure the driver's switch and drain gates poll these (zdd/targets/azure.py).
pulumi.export("front_door", getattr(built.front_door, "driver_outputs", None))
