"""The smooth-deploy Pulumi program: `zdd:phase` decides what exists, the target how it is built."""

from __future__ import annotations

import pulumi

from infra.config import phase_guard, read_settings
from infra.program import build
from infra.targets import target_for

config = pulumi.Config("zdd")
settings = read_settings(config)
target = target_for(config)
guard = phase_guard(settings.stack.phase)
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
pulumi.export("restore_point", settings.declaration.restore_point)
pulumi.export("primary_url", built.primary.url)
pulumi.export("clone_url", built.clone.url if built.clone else None)
pulumi.export("primary_database", built.primary_database.database_name)
pulumi.export(
    "clone_database", built.clone_database.database_name if built.clone_database else None
)
pulumi.export("public_url", built.front_door.public_url)
pulumi.export("preview_url", built.front_door.preview_url)
# Locally the driver reads the front door's in-flight counts through its admin API.
admin_token = getattr(built.front_door, "admin_token", None)
pulumi.export("front_door_admin_token", pulumi.Output.secret(admin_token) if admin_token else None)
