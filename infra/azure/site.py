"""The Azure site: a Linux web app (container image or package) reached only through the stack's
Front Door profile and the operator addresses, with its warmup and smoke hooks."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import partial

import pulumi
from pulumi_azure_native import web
from pulumi_command import local

from infra.azure.foundation import AzureFoundation, app_service_plan, app_subnet
from infra.azure.settings import MIN_TLS_VERSION, front_door_only, operator_network
from infra.components import SiteArgs
from zdd.appspec import fill
from zdd.phases import DATABASE_MODE_SETTINGS, Instance


class AzureSite(pulumi.ComponentResource):
    """A Linux web app on the shared plan (the clone on its own plan with zdd:cloneOwnPlan)."""

    def __init__(
        self,
        name: str,
        args: SiteArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:azure:Site", name, None, opts)
        self._foundation = foundation
        settings = foundation.settings
        spec = args.spec
        instance = str(spec.instance)
        mode = str(spec.database_mode)
        plan_id, subnet_id = self._plan(name, spec.instance)
        placeholders = args.database.database_name.apply(
            lambda database: settings.placeholders(
                spec.version, spec.instance, spec.database_mode, database
            )
        )
        after_grant = [foundation.pull_grant] if foundation.pull_grant else []
        release = self._release(spec.version)
        self.app = web.WebApp(
            f"{name}-app",
            name=f"{settings.name_prefix}-{instance}",
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            server_farm_id=plan_id,
            kind="app,linux",
            reserved=True,
            https_only=True,
            client_affinity_enabled=False,
            identity=release.identity,
            virtual_network_subnet_id=subnet_id,
            site_config=self._site_config(args, placeholders, release),
            # Visible in a preview even though the site config holds a secret.
            tags={"zdd-instance": instance, "zdd-version": spec.version, "zdd-database-mode": mode},
            opts=pulumi.ResourceOptions(parent=self, depends_on=after_grant),
        )
        self.host_name: pulumi.Output[str] = self.app.default_host_name
        self.url: pulumi.Output[str] = pulumi.Output.concat("https://", self.host_name)
        self.hooks = self._hooks(name, spec.version, instance, mode)
        self.register_outputs({"url": self.url})

    def _plan(self, name: str, instance: Instance) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The plan the app runs on and the subnet it reaches the network from: the shared ones,
        or the clone's own with zdd:cloneOwnPlan."""
        foundation = self._foundation
        settings = foundation.settings
        self.plan: web.AppServicePlan | None = None
        if not (instance is Instance.CLONE and settings.clone_own_plan):
            return foundation.plan.id, foundation.apps_subnet.id
        child = pulumi.ResourceOptions(parent=self)
        self.plan = app_service_plan(
            f"{name}-plan", f"{settings.name_prefix}-{instance}-plan", foundation, child
        )
        return self.plan.id, app_subnet(f"{name}-subnet", "clone-apps", foundation, child).id

    def _app_settings(
        self, args: SiteArgs, placeholders: pulumi.Output[dict[str, str]]
    ) -> list[web.NameValuePairArgs]:
        """Who the app is (version, instance, database mode, database) and the app spec's
        `env`, its placeholders filled; a key the platform sets is refused."""
        settings = self._foundation.settings
        spec = args.spec
        mode = str(spec.database_mode)
        app_settings = [
            web.NameValuePairArgs(name="ZDD_VERSION", value=spec.version),
            web.NameValuePairArgs(name="ZDD_INSTANCE", value=str(spec.instance)),
            *(web.NameValuePairArgs(name=key, value=mode) for key in DATABASE_MODE_SETTINGS),
            web.NameValuePairArgs(name="ZDD_DATABASE_NAME", value=args.database.database_name),
        ]
        if settings.custom_domain:
            # No app binds the visitors' host (App Service allows a host name once per
            # deployment unit, and both apps serve it): a site that cannot read it from
            # X-Forwarded-Host finds it here.
            app_settings.append(
                web.NameValuePairArgs(name="ZDD_PUBLIC_HOST", value=settings.custom_domain)
            )
        taken = {pair.name for pair in app_settings} | {
            "ZDD_PUBLIC_HOST",
            "WEBSITE_RUN_FROM_PACKAGE",
            "WEBSITES_PORT",
        }
        for key, value in settings.app.env.items():
            if key in taken:
                raise pulumi.RunError(
                    f"app spec field `env`: {key} is set by the platform; rename it"
                )
            app_settings.append(
                web.NameValuePairArgs(name=key, value=placeholders.apply(partial(fill, value)))
            )
        return app_settings

    def _site_config(
        self, args: SiteArgs, placeholders: pulumi.Output[dict[str, str]], release: _Release
    ) -> web.SiteConfigArgs:
        """What the app runs and how: its release, start command, settings, connection string
        and who may reach it."""
        settings = self._foundation.settings
        # The spec's `start`, or the image's (or the runtime's) own start command.
        startup: pulumi.Output[str] | None = (
            placeholders.apply(
                lambda known: shlex.join(fill(arg, known) for arg in settings.app.start)
            )
            if settings.app.start
            else None
        )
        return web.SiteConfigArgs(
            acr_use_managed_identity_creds=True if release.pull_with else None,
            acr_user_managed_identity_id=release.pull_with,
            # SQL is reached through the subnet's service endpoint.
            vnet_route_all_enabled=True,
            always_on=True,
            health_check_path=settings.app.health.path,
            min_tls_version=MIN_TLS_VERSION,
            scm_min_tls_version=MIN_TLS_VERSION,
            ftps_state=web.FtpsState.DISABLED,
            http20_enabled=True,
            linux_fx_version=release.linux_fx_version,
            app_command_line=startup,
            app_settings=[*self._app_settings(args, placeholders), *release.app_settings],
            connection_strings=[
                web.ConnStringInfoArgs(
                    name=settings.connection_string_name,
                    connection_string=args.database.connection,
                    type=getattr(
                        args.database, "connection_type", web.ConnectionStringType.SQL_AZURE
                    ),
                )
            ],
            ip_security_restrictions=self._restrictions(),
            ip_security_restrictions_default_action=web.DefaultAction.DENY,
        )

    def _release(self, version: str) -> _Release:
        """How the app gets `version`: run from a package URL, or pulled as a container image
        (with the stack's pull identity where it has a private registry)."""
        foundation = self._foundation
        settings = foundation.settings
        code = settings.app.release(version)
        if settings.runs_from_package:
            return _Release(
                settings.linux_runtime,
                [web.NameValuePairArgs(name="WEBSITE_RUN_FROM_PACKAGE", value=code)],
            )
        container = [
            web.NameValuePairArgs(name="WEBSITES_ENABLE_APP_SERVICE_STORAGE", value="false"),
            web.NameValuePairArgs(name="WEBSITES_PORT", value=str(settings.container_port)),
        ]
        if foundation.pull_identity is None:
            return _Release(f"DOCKER|{code}", container)
        identity = web.ManagedServiceIdentityArgs(
            type=web.ManagedServiceIdentityType.USER_ASSIGNED,
            user_assigned_identities=[foundation.pull_identity.id],
        )
        return _Release(f"DOCKER|{code}", container, identity, foundation.pull_identity.client_id)

    def _restrictions(self) -> list[web.IpSecurityRestrictionArgs]:
        """Who may reach the app: the stack's Front Door profile and the operator addresses."""
        settings = self._foundation.settings
        return [
            front_door_only(self._foundation.front_door_id),
            *(
                web.IpSecurityRestrictionArgs(
                    name=f"operator-{index}",
                    description="The machine that runs zdd (health checks)",
                    action="Allow",
                    priority=200 + index,
                    tag=web.IpFilterTag.DEFAULT,
                    ip_address=str(operator_network(address)),
                )
                for index, address in enumerate(settings.operator_ip_addresses)
            ),
        ]

    def _hooks(self, name: str, version: str, instance: str, mode: str) -> list[local.Command]:
        """The stack's warmup and smoke commands, run against the app in that order."""
        settings = self._foundation.settings
        environment: dict[str, pulumi.Input[str]] = {
            "ZDD_SITE_URL": self.url,
            "ZDD_VERSION": version,
            "ZDD_INSTANCE": instance,
            "ZDD_DATABASE_MODE": mode,
        }
        hooks: list[local.Command] = []
        after: list[pulumi.Resource] = [self.app]
        for hook, command in (
            ("warmup", settings.warmup_command),
            ("smoke", settings.smoke_command),
        ):
            if command:
                hooks.append(
                    local.Command(
                        f"{name}-{hook}",
                        create=command,
                        environment=environment,
                        triggers=[version, mode],
                        opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
                    )
                )
                after.append(hooks[-1])
        return hooks


@dataclass(frozen=True)
class _Release:
    """What the web app runs (`linuxFxVersion`), the app settings that go with it and the
    identity it pulls its image with."""

    linux_fx_version: str | None
    app_settings: list[web.NameValuePairArgs]
    identity: web.ManagedServiceIdentityArgs | None = None
    pull_with: pulumi.Output[str] | None = None
