"""The Azure front door: Front Door Standard's endpoints, origins, routes and WAF policies on the
foundation's profile."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlparse

import pulumi
from pulumi_azure_native import cdn, frontdoor

from infra.azure.foundation import AzureFoundation
from infra.azure.settings import operator_network
from infra.components import FrontDoorArgs, SiteLike
from zdd.phases import Instance

# Front Door's WAF answers a blocked request with 200, 403, 405, 406 or 429 only (no 503, no
# extra header): 429 is the one clients treat as "come back later".
READ_ONLY_STATUS = 429
READ_ONLY_BODY = "The site is read-only for a few minutes during a deployment; retry in a minute."
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _host_of(site: SiteLike) -> pulumi.Output[str]:
    return site.url.apply(lambda url: urlparse(url).hostname or url)


class AzureFrontDoor(pulumi.ComponentResource):
    """Front Door Standard: one single-origin origin group per site, and two endpoints.

    - The public route points at the origin group of the site that has the traffic: moving the
      traffic is one change (the route's `originGroup`), whose `deploymentStatus` the driver
      polls until every edge has it.
    - The preview route always points at the primary's group; a WAF policy lets only the
      operator addresses through (`zdd:operatorIpAddresses`), so the preview endpoint is no
      way into the read-write primary for anyone else.
    - While a read-only clone may hold traffic, the public WAF policy refuses every request
      that is not GET, HEAD or OPTIONS at the edge (status 429, see `READ_ONLY_STATUS`).
    """

    def __init__(
        self,
        name: str,
        args: FrontDoorArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:azure:FrontDoor", name, None, opts)
        if args.traffic not in args.origins or Instance.PRIMARY not in args.origins:
            raise pulumi.RunError(f"the front door has no {args.traffic} origin to send traffic to")
        self._foundation = foundation
        settings = foundation.settings
        prefix = settings.name_prefix
        self.public_endpoint = self._endpoint(f"{name}-public-endpoint", f"{prefix}-public")
        self.preview_endpoint = self._endpoint(f"{name}-preview-endpoint", f"{prefix}-preview")
        self.groups: dict[Instance, cdn.AFDOriginGroup] = {}
        self.origins: dict[Instance, cdn.AFDOrigin] = {}
        for role, site in args.origins.items():
            self.groups[role] = self._origin_group(f"{name}-{role}-origins", str(role))
            self.origins[role] = self._origin(f"{name}-{role}", self.groups[role], role, site)
        self.custom_domain: cdn.AFDCustomDomain | None = None
        if settings.custom_domain:
            self.custom_domain = cdn.AFDCustomDomain(
                f"{name}-custom-domain",
                custom_domain_name=settings.custom_domain.replace(".", "-"),
                host_name=settings.custom_domain,
                profile_name=foundation.profile.name,
                resource_group_name=foundation.resource_group_name,
                tls_settings=cdn.AFDDomainHttpsParametersArgs(
                    certificate_type=cdn.AfdCertificateType.MANAGED_CERTIFICATE,
                    minimum_tls_version=cdn.AfdMinimumTlsVersion.TLS12,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        public_domains = [self.public_endpoint.id]
        if self.custom_domain is not None:
            public_domains.append(self.custom_domain.id)
        self.public_waf = self._waf_policy(
            f"{name}-public-waf",
            f"{prefix}public",
            [_read_only_rule(enabled=args.refuse_writes)],
            public_domains,
        )
        self.preview_waf = self._waf_policy(
            f"{name}-preview-waf",
            f"{prefix}preview",
            [_operator_only_rule(settings.operator_ip_addresses)],
            [self.preview_endpoint.id],
        )
        # The switch: writes are refused at the edge before the route moves to a read-only
        # clone (the route waits for the WAF policy).
        self.public_route = self._route(
            f"{name}-public-route",
            self.public_endpoint,
            self.groups[args.traffic],
            [*self.origins.values(), *self.public_waf],
            custom_domain=self.custom_domain,
        )
        self.preview_route = self._route(
            f"{name}-preview-route",
            self.preview_endpoint,
            self.groups[Instance.PRIMARY],
            [self.origins[Instance.PRIMARY], *self.preview_waf],
        )
        self.public_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://", self.public_endpoint.host_name
        )
        self.preview_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://", self.preview_endpoint.host_name
        )
        self.front_door_id: pulumi.Output[str] = foundation.front_door_id
        # What the driver's Azure gates read (zdd/azure.py): which resource to poll and count.
        self.driver_outputs: dict[str, pulumi.Input[Any]] = {
            "profile_id": foundation.profile.id,
            "public_route_id": self.public_route.id,
            "origin_hosts": {str(role): _host_of(site) for role, site in args.origins.items()},
            "settle_seconds": settings.switch_settle_seconds,
            "quiet_seconds": settings.drain_quiet_seconds,
            "switch_timeout_seconds": settings.switch_timeout_seconds,
        }
        self.register_outputs({"public_url": self.public_url, "preview_url": self.preview_url})

    def _endpoint(self, logical: str, azure_name: str) -> cdn.AFDEndpoint:
        return cdn.AFDEndpoint(
            logical,
            endpoint_name=azure_name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            location="global",
            enabled_state=cdn.EnabledState.ENABLED,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _origin_group(self, logical: str, azure_name: str) -> cdn.AFDOriginGroup:
        # One origin per group: Front Door's health probes would only add requests to the
        # origin (and to the drain evidence) without any choice to make, so they are off.
        return cdn.AFDOriginGroup(
            logical,
            origin_group_name=azure_name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            load_balancing_settings=cdn.LoadBalancingSettingsParametersArgs(
                sample_size=4, successful_samples_required=3, additional_latency_in_milliseconds=50
            ),
            session_affinity_state=cdn.EnabledState.DISABLED,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _origin(
        self, logical: str, group: cdn.AFDOriginGroup, role: Instance, site: SiteLike
    ) -> cdn.AFDOrigin:
        host = _host_of(site)
        # With a custom domain, both sites see the visitors' host (links, cookies, site
        # mapping); without one, the app's own name (App Service routes by it).
        host_header = self._foundation.settings.custom_domain or host
        return cdn.AFDOrigin(
            logical,
            origin_name=str(role),
            origin_group_name=group.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            host_name=host,
            origin_host_header=host_header,
            http_port=80,
            https_port=443,
            priority=1,
            weight=1000,
            enabled_state=cdn.EnabledState.ENABLED,
            enforce_certificate_name_check=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _waf_policy(
        self,
        logical: str,
        azure_name: str,
        rules: list[frontdoor.CustomRuleArgs],
        domains: list[pulumi.Output[str]],
    ) -> tuple[frontdoor.Policy, cdn.SecurityPolicy]:
        foundation = self._foundation
        policy = frontdoor.Policy(
            logical,
            # WAF policy names are letters and digits only.
            policy_name=re.sub(r"[^A-Za-z0-9]", "", azure_name),
            resource_group_name=foundation.resource_group_name,
            location="Global",
            sku=frontdoor.SkuArgs(name=frontdoor.SkuName.STANDARD_AZURE_FRONT_DOOR),
            policy_settings=frontdoor.PolicySettingsArgs(
                enabled_state=frontdoor.PolicyEnabledState.ENABLED,
                mode=frontdoor.PolicyMode.PREVENTION,
                custom_block_response_status_code=READ_ONLY_STATUS,
                custom_block_response_body=base64.b64encode(READ_ONLY_BODY.encode()).decode(),
            ),
            custom_rules=frontdoor.CustomRuleListArgs(rules=rules),
            opts=pulumi.ResourceOptions(parent=self),
        )
        association = cdn.SecurityPolicy(
            f"{logical}-association",
            security_policy_name=re.sub(r"[^A-Za-z0-9-]", "", azure_name),
            profile_name=foundation.profile.name,
            resource_group_name=foundation.resource_group_name,
            parameters=cdn.SecurityPolicyWebApplicationFirewallParametersArgs(
                type="WebApplicationFirewall",
                waf_policy=cdn.ResourceReferenceArgs(id=policy.id),
                associations=[
                    cdn.SecurityPolicyWebApplicationFirewallAssociationArgs(
                        domains=[cdn.ActivatedResourceReferenceArgs(id=d) for d in domains],
                        patterns_to_match=["/*"],
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return policy, association

    def _route(
        self,
        logical: str,
        endpoint: cdn.AFDEndpoint,
        group: cdn.AFDOriginGroup,
        after: list[pulumi.Resource],
        custom_domain: cdn.AFDCustomDomain | None = None,
    ) -> cdn.Route:
        return cdn.Route(
            logical,
            route_name="site",
            endpoint_name=endpoint.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            origin_group=cdn.ResourceReferenceArgs(id=group.id),
            custom_domains=[cdn.ActivatedResourceReferenceArgs(id=custom_domain.id)]
            if custom_domain
            else None,
            supported_protocols=[cdn.AFDEndpointProtocols.HTTP, cdn.AFDEndpointProtocols.HTTPS],
            patterns_to_match=["/*"],
            forwarding_protocol=cdn.ForwardingProtocol.HTTPS_ONLY,
            https_redirect=cdn.HttpsRedirect.ENABLED,
            link_to_default_domain=cdn.LinkToDefaultDomain.ENABLED,
            enabled_state=cdn.EnabledState.ENABLED,
            # A route needs an origin in its group.
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )


def _read_only_rule(*, enabled: bool) -> frontdoor.CustomRuleArgs:
    """Refuse writes at the edge: anything but GET, HEAD and OPTIONS is blocked."""
    return frontdoor.CustomRuleArgs(
        name="readonly",
        priority=10,
        rule_type=frontdoor.RuleType.MATCH_RULE,
        action=frontdoor.ActionType.BLOCK,
        enabled_state=frontdoor.CustomRuleEnabledState.ENABLED
        if enabled
        else frontdoor.CustomRuleEnabledState.DISABLED,
        match_conditions=[
            frontdoor.MatchConditionArgs(
                match_variable=frontdoor.MatchVariable.REQUEST_METHOD,
                operator=frontdoor.Operator.EQUAL,
                negate_condition=True,
                match_value=list(SAFE_METHODS),
            )
        ],
    )


def _operator_only_rule(addresses: tuple[str, ...]) -> frontdoor.CustomRuleArgs:
    """Block every client whose TCP peer is not an operator address (SocketAddr, not the
    spoofable X-Forwarded-For that RemoteAddr reads)."""
    return frontdoor.CustomRuleArgs(
        name="operatorsonly",
        priority=10,
        rule_type=frontdoor.RuleType.MATCH_RULE,
        action=frontdoor.ActionType.BLOCK,
        enabled_state=frontdoor.CustomRuleEnabledState.ENABLED,
        match_conditions=[
            frontdoor.MatchConditionArgs(
                match_variable=frontdoor.MatchVariable.SOCKET_ADDR,
                operator=frontdoor.Operator.IP_MATCH,
                negate_condition=True,
                match_value=[str(operator_network(address)) for address in addresses],
            )
        ],
    )
