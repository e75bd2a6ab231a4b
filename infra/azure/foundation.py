"""The Azure foundation: what every phase shares (resource group, App Service plan, SQL server,
virtual network, image pull identity, Front Door profile).

The helpers that make an App Service plan and an app subnet live here too: the site calls them
again for a clone on its own plan.
"""

from __future__ import annotations

import uuid

import pulumi
from pulumi_azure_native import (
    authorization,
    cdn,
    managedidentity,
    network,
    privatedns,
    resources,
    sql,
    web,
)

from infra.azure.settings import MIN_TLS_VERSION, AzureSettings, operator_network

# Built-in role that lets an identity pull images from a container registry.
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
# The web apps reach Azure SQL from this network (VNet integration + a Microsoft.Sql service
# endpoint), never through the "allow every Azure service" rule.
VNET_RANGE = "10.80.0.0/16"
SUBNETS = {"apps": "10.80.0.0/24", "clone-apps": "10.80.1.0/24", "data": "10.80.2.0/24"}
# A PostgreSQL flexible server takes no service endpoint: the web apps reach each server of the
# stack through a private endpoint in the subnet `data`, named in this private DNS zone (public
# access stays on for the operator's firewall rules, which the migration and the copy use).
POSTGRES_PRIVATE_ZONE = "privatelink.postgres.database.azure.com"


class AzureFoundation(pulumi.ComponentResource):
    """What every phase shares. The resource group and the SQL server hold the data: protected."""

    def __init__(
        self, name: str, settings: AzureSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("zdd:azure:Foundation", name, None, opts)
        self.settings = settings
        child = pulumi.ResourceOptions(parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=True)
        self.resource_group = resources.ResourceGroup(
            f"{name}-rg",
            resource_group_name=settings.resource_group_name,
            location=settings.location,
            tags={"zdd-stack": pulumi.get_stack()},
            opts=keep,
        )
        self.resource_group_name: pulumi.Output[str] = self.resource_group.name
        self.plan = app_service_plan(f"{name}-plan", f"{settings.name_prefix}-plan", self, child)
        self.sql_server: sql.Server | None = None
        self.data_subnet: network.Subnet | None = None
        self.postgres_zone: privatedns.PrivateZone | None = None
        if not settings.on_postgres:
            self.sql_server = self._sql_server(name, keep)
        self._network(name, child)
        self.firewall_rules: list[pulumi.Resource] = []
        if settings.on_postgres:
            self._postgres_network(name, child)
        else:
            # Each PostgreSQL server has its own rules (infra/azure/postgres.py).
            self.firewall_rules = self._sql_firewall(name, child)
        self.pull_identity: managedidentity.UserAssignedIdentity | None = None
        self.pull_grant: authorization.RoleAssignment | None = None
        if settings.container_registry_id:
            self._pull_identity(name, settings.container_registry_id, child)
        self.profile = cdn.Profile(
            f"{name}-frontdoor",
            profile_name=f"{settings.name_prefix}-fd",
            resource_group_name=self.resource_group_name,
            location="global",
            sku=cdn.SkuArgs(name=cdn.SkuName.STANDARD_AZURE_FRONT_DOOR),
            origin_response_timeout_seconds=60,
            opts=child,
        )
        # The value Front Door sends in X-Azure-FDID.
        self.front_door_id: pulumi.Output[str] = self.profile.front_door_id
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "sql_server": self.sql_server.fully_qualified_domain_name
                if self.sql_server
                else None,
                "front_door_id": self.front_door_id,
            }
        )

    def _network(self, name: str, child: pulumi.ResourceOptions) -> None:
        """The virtual network and the shared plan's subnet: the web apps reach Azure SQL from
        their own subnet (service endpoint)."""
        self.vnet = network.VirtualNetwork(
            f"{name}-vnet",
            virtual_network_name=f"{self.settings.name_prefix}-vnet",
            resource_group_name=self.resource_group_name,
            location=self.settings.location,
            address_space=network.AddressSpaceArgs(address_prefixes=[VNET_RANGE]),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["subnets"]),
        )
        self.apps_subnet = app_subnet(f"{name}-apps-subnet", "apps", self, child)

    def _sql_firewall(self, name: str, child: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """The SQL server's firewall: "every Azure service" where the stack opts in, and the
        operator's addresses (the migration and the digest run from there)."""
        settings = self.settings
        rules: list[pulumi.Resource] = []
        if settings.allow_azure_services:
            rules.append(
                sql.FirewallRule(
                    f"{name}-sql-azure-services",
                    firewall_rule_name="AllowAllWindowsAzureIps",
                    server_name=self.sql.name,
                    resource_group_name=self.resource_group_name,
                    start_ip_address="0.0.0.0",
                    end_ip_address="0.0.0.0",
                    opts=child,
                )
            )
        for index, address in enumerate(settings.operator_ip_addresses):
            operator = operator_network(address)
            rules.append(
                sql.FirewallRule(
                    f"{name}-sql-operator-{index}",
                    firewall_rule_name=f"zdd-operator-{index}",
                    server_name=self.sql.name,
                    resource_group_name=self.resource_group_name,
                    start_ip_address=str(operator.network_address),
                    end_ip_address=str(operator.broadcast_address),
                    opts=child,
                )
            )
        return rules

    def _pull_identity(self, name: str, registry: str, child: pulumi.ResourceOptions) -> None:
        """The identity the web apps pull their images with; it holds AcrPull before any app
        exists, so the first pull already works."""
        prefix = self.settings.name_prefix
        self.pull_identity = managedidentity.UserAssignedIdentity(
            f"{name}-pull-identity",
            resource_name_=f"{prefix}-pull",
            resource_group_name=self.resource_group_name,
            location=self.settings.location,
            opts=child,
        )
        subscription = registry.split("/resourceGroups/")[0]
        self.pull_grant = authorization.RoleAssignment(
            f"{name}-acr-pull",
            role_assignment_name=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}{registry}")),
            principal_id=self.pull_identity.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=(
                f"{subscription}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE}"
            ),
            scope=registry,
            opts=child,
        )

    def _sql_server(self, name: str, keep: pulumi.ResourceOptions) -> sql.Server:
        settings = self.settings
        return sql.Server(
            f"{name}-sql",
            server_name=f"{settings.name_prefix}-sql",
            resource_group_name=self.resource_group_name,
            location=settings.location,
            version="12.0",
            administrator_login=settings.sql_admin_login,
            administrator_login_password=settings.sql_admin_password,
            administrators=self._entra_administrator(),
            minimal_tls_version=MIN_TLS_VERSION,
            public_network_access="Enabled",
            opts=keep,
        )

    def _entra_administrator(self) -> sql.ServerExternalAdministratorArgs | None:
        """The SQL server's Microsoft Entra administrator, where the stack names one."""
        settings = self.settings
        if not (settings.sql_entra_admin_login and settings.sql_entra_admin_object_id):
            return None
        return sql.ServerExternalAdministratorArgs(
            administrator_type="ActiveDirectory",
            login=settings.sql_entra_admin_login,
            sid=settings.sql_entra_admin_object_id,
            azure_ad_only_authentication=False,
        )

    def _postgres_network(self, name: str, child: pulumi.ResourceOptions) -> None:
        """The subnet of the servers' private endpoints and the private DNS zone that names
        them inside the network (linked to it)."""
        self.data_subnet = network.Subnet(
            f"{name}-data-subnet",
            subnet_name="data",
            virtual_network_name=self.vnet.name,
            resource_group_name=self.resource_group_name,
            address_prefix=SUBNETS["data"],
            private_endpoint_network_policies=network.VirtualNetworkPrivateEndpointNetworkPolicies.DISABLED,
            opts=child,
        )
        self.postgres_zone = privatedns.PrivateZone(
            f"{name}-postgres-zone",
            private_zone_name=POSTGRES_PRIVATE_ZONE,
            resource_group_name=self.resource_group_name,
            location="global",
            opts=child,
        )
        privatedns.VirtualNetworkLink(
            f"{name}-postgres-zone-link",
            virtual_network_link_name=f"{self.settings.name_prefix}-vnet",
            private_zone_name=self.postgres_zone.name,
            resource_group_name=self.resource_group_name,
            location="global",
            virtual_network=privatedns.SubResourceArgs(id=self.vnet.id),
            registration_enabled=False,
            opts=child,
        )

    @property
    def sql(self) -> sql.Server:
        """The Azure SQL server (a stack on Azure SQL only)."""
        if self.sql_server is None:
            raise pulumi.RunError("this stack's database is PostgreSQL: it has no Azure SQL server")
        return self.sql_server


def app_subnet(
    logical: str, subnet: str, foundation: AzureFoundation, opts: pulumi.ResourceOptions
) -> network.Subnet:
    """A subnet for one App Service plan's VNet integration, with a Microsoft.Sql endpoint and
    its SQL virtual network rule (one plan per subnet: the clone's own plan gets its own)."""
    created = network.Subnet(
        logical,
        subnet_name=subnet,
        virtual_network_name=foundation.vnet.name,
        resource_group_name=foundation.resource_group_name,
        address_prefix=SUBNETS[subnet],
        delegations=[network.DelegationArgs(name="web", service_name="Microsoft.Web/serverFarms")],
        service_endpoints=None
        if foundation.sql_server is None
        else [network.ServiceEndpointPropertiesFormatArgs(service="Microsoft.Sql")],
        opts=opts,
    )
    if foundation.sql_server is None:
        return created  # PostgreSQL: reached through its servers' private endpoints
    sql.VirtualNetworkRule(
        f"{logical}-sql",
        virtual_network_rule_name=f"zdd-{subnet}",
        server_name=foundation.sql.name,
        resource_group_name=foundation.resource_group_name,
        virtual_network_subnet_id=created.id,
        opts=opts,
    )
    return created


def app_service_plan(
    logical: str, azure_name: str, foundation: AzureFoundation, opts: pulumi.ResourceOptions
) -> web.AppServicePlan:
    settings = foundation.settings
    return web.AppServicePlan(
        logical,
        name=azure_name,
        resource_group_name=foundation.resource_group_name,
        location=settings.location,
        kind="linux",
        reserved=True,  # Linux
        sku=web.SkuDescriptionArgs(name=settings.app_service_sku),
        opts=opts,
    )
