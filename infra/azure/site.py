"""The Azure site: a Linux web app (container image or package) reached only through the stack's
Front Door profile and the operator addresses, with its warmup and smoke hooks."""

from __future__ import annotations

import shlex
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
        settings = foundation.settings
        spec = args.spec
        instance = str(spec.instance)
        mode = str(spec.database_mode)
        child = pulumi.ResourceOptions(parent=self)
        plan_id = foundation.plan.id
        subnet_id = foundation.apps_subnet.id
        self.plan: web.AppServicePlan | None = None
        if spec.instance is Instance.CLONE and settings.clone_own_plan:
            self.plan = app_service_plan(
                f"{name}-plan", f"{settings.name_prefix}-{instance}-plan", foundation, child
            )
            plan_id = self.plan.id
            subnet_id = app_subnet(f"{name}-subnet", "clone-apps", foundation, child).id
        code = settings.app.release(spec.version)
        placeholders = args.database.database_name.apply(
            lambda database: settings.placeholders(
                spec.version, spec.instance, spec.database_mode, database
            )
        )
        app_settings = [
            web.NameValuePairArgs(name="ZDD_VERSION", value=spec.version),
            web.NameValuePairArgs(name="ZDD_INSTANCE", value=instance),
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
        # The spec's `start`, or the image's (or the runtime's) own start command.
        startup: pulumi.Output[str] | None = (
            placeholders.apply(
                lambda known: shlex.join(fill(arg, known) for arg in settings.app.start)
            )
            if settings.app.start
            else None
        )
        identity = None
        pull_with: pulumi.Output[str] | None = None
        if settings.runs_from_package:
            app_settings.append(web.NameValuePairArgs(name="WEBSITE_RUN_FROM_PACKAGE", value=code))
            linux_fx_version = settings.linux_runtime
        else:
            app_settings += [
                web.NameValuePairArgs(name="WEBSITES_ENABLE_APP_SERVICE_STORAGE", value="false"),
                web.NameValuePairArgs(name="WEBSITES_PORT", value=str(settings.container_port)),
            ]
            linux_fx_version = f"DOCKER|{code}"
            if foundation.pull_identity is not None:
                identity = web.ManagedServiceIdentityArgs(
                    type=web.ManagedServiceIdentityType.USER_ASSIGNED,
                    user_assigned_identities=[foundation.pull_identity.id],
                )
                pull_with = foundation.pull_identity.client_id
        restrictions = [
            front_door_only(foundation.front_door_id),
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
        after_grant = [foundation.pull_grant] if foundation.pull_grant else []
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
            identity=identity,
            virtual_network_subnet_id=subnet_id,
            site_config=web.SiteConfigArgs(
                acr_use_managed_identity_creds=True if pull_with else None,
                acr_user_managed_identity_id=pull_with,
                # SQL is reached through the subnet's service endpoint.
                vnet_route_all_enabled=True,
                always_on=True,
                health_check_path=settings.app.health.path,
                min_tls_version=MIN_TLS_VERSION,
                scm_min_tls_version=MIN_TLS_VERSION,
                ftps_state=web.FtpsState.DISABLED,
                http20_enabled=True,
                linux_fx_version=linux_fx_version,
                app_command_line=startup,
                app_settings=app_settings,
                connection_strings=[
                    web.ConnStringInfoArgs(
                        name=settings.connection_string_name,
                        connection_string=args.database.connection,
                        type=getattr(
                            args.database, "connection_type", web.ConnectionStringType.SQL_AZURE
                        ),
                    )
                ],
                ip_security_restrictions=restrictions,
                ip_security_restrictions_default_action=web.DefaultAction.DENY,
            ),
            # Visible in a preview even though the site config holds a secret.
            tags={"zdd-instance": instance, "zdd-version": spec.version, "zdd-database-mode": mode},
            opts=pulumi.ResourceOptions(parent=self, depends_on=after_grant),
        )
        self.host_name: pulumi.Output[str] = self.app.default_host_name
        self.url: pulumi.Output[str] = pulumi.Output.concat("https://", self.host_name)
        self.hooks: list[local.Command] = []
        environment: dict[str, pulumi.Input[str]] = {
            "ZDD_SITE_URL": self.url,
            "ZDD_VERSION": spec.version,
            "ZDD_INSTANCE": instance,
            "ZDD_DATABASE_MODE": mode,
        }
        after: list[pulumi.Resource] = [self.app]
        for hook, command in (
            ("warmup", settings.warmup_command),
            ("smoke", settings.smoke_command),
        ):
            if command:
                self.hooks.append(
                    local.Command(
                        f"{name}-{hook}",
                        create=command,
                        environment=environment,
                        triggers=[spec.version, mode],
                        opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
                    )
                )
                after.append(self.hooks[-1])
        self.register_outputs({"url": self.url})
