"""The Azure front door: Front Door Standard's endpoints, origins, routes, the read-only rule set
and the preview's WAF policy on the foundation's profile."""

from __future__ import annotations

import base64
import json
import re
import shlex
from typing import Any
from urllib.parse import urlparse

import pulumi
from pulumi_azure_native import cdn, frontdoor, web

from infra.azure.foundation import AzureFoundation
from infra.azure.settings import MIN_TLS_VERSION, front_door_only, operator_network
from infra.components import FrontDoorArgs, SiteLike
from zdd.phases import Instance

# A write while a read-only clone serves is answered 503 with Retry-After, as the local front
# door answers it: by a small origin of the stack's own, to which a rule set sends every request
# that is not GET, HEAD or OPTIONS. (Front Door's WAF could only block with 200, 403, 405, 406 or
# 429, and without a Retry-After header.)
READ_ONLY_STATUS = 503
READ_ONLY_RETRY_AFTER_SECONDS = 60
READ_ONLY_BODY = "The site is read-only for a few minutes during a deployment; retry in a minute."
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# The refusing origin: Node's own HTTP server on a built-in runtime, so no image is needed.
READ_ONLY_RUNTIME = "NODE|20-lts"
# The WAF block answer of the preview endpoint (operators only): 403, nothing to retry.
PREVIEW_BLOCK_STATUS = 403
PREVIEW_BLOCK_BODY = "The preview endpoint answers the operators' addresses only."


def _host_of(site: SiteLike) -> pulumi.Output[str]:
    return site.url.apply(lambda url: urlparse(url).hostname or url)


def read_only_server() -> str:
    """The refusing origin's start command: every request answered 503 with Retry-After."""
    headers = {
        "Retry-After": str(READ_ONLY_RETRY_AFTER_SECONDS),
        "Content-Type": "text/plain; charset=utf-8",
        "Cache-Control": "no-store",
        "X-ZDD-Instance": "front-door",
    }
    handler = (
        f"(q,s)=>{{s.writeHead({READ_ONLY_STATUS},{json.dumps(headers)});"
        f"s.end({json.dumps(READ_ONLY_BODY)})}}"
    )
    # No single quote inside: the whole script is one single-quoted shell word.
    script = f'require("http").createServer({handler}).listen(process.env.PORT||8080)'
    return f"node -e {shlex.quote(script)}"


class AzureFrontDoor(pulumi.ComponentResource):
    """Front Door Standard: one single-origin origin group per site, and two endpoints.

    - The public route points at the origin group of the site that has the traffic: moving the
      traffic is one change (the route's `originGroup`), whose `deploymentStatus` the driver
      polls until every edge has it.
    - The preview route always points at the primary's group; a WAF policy lets only the
      operator addresses through (`zdd:operatorIpAddresses`), so the preview endpoint is no
      way into the read-write primary for anyone else.
    - While a read-only clone may hold traffic, the public route carries the `readonly` rule
      set: every request that is not GET, HEAD or OPTIONS goes to a small origin that answers
      503 with Retry-After. It is attached in the same route update as the switch, so the
      refusal and the switch are one global change with one `deploymentStatus`.
    - Every origin is reached by its own host name (`*.azurewebsites.net`, whose certificate
      App Service provides): a custom domain is the visitors' host at the edge only, and Front
      Door passes it on in `X-Forwarded-Host`. No app binds it, so primary and clone can both
      serve it.
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
            self.origins[role] = self._origin(
                f"{name}-{role}", self.groups[role], str(role), _host_of(site)
            )
        self.read_only_app, self.read_only_group, self.read_only_rules = self._read_only(name)
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
        self.preview_waf = self._waf_policy(
            f"{name}-preview-waf",
            f"{prefix}preview",
            [_operator_only_rule(settings.operator_ip_addresses)],
            [self.preview_endpoint.id],
        )
        # The switch: the origin group and, while a read-only clone may serve, the rule set that
        # refuses writes, in one route update (the rule set and its origin exist from `idle` on).
        self.public_route = self._route(
            f"{name}-public-route",
            self.public_endpoint,
            self.groups[args.traffic],
            [*self.origins.values(), *self.read_only_rules],
            custom_domain=self.custom_domain,
            rule_set=self.read_only_rules[0] if args.refuse_writes else None,
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
        # What the driver's Azure gates read (zdd/targets/azure.py): what to poll and count.
        self.driver_outputs: dict[str, pulumi.Input[Any]] = {
            "profile_id": foundation.profile.id,
            "public_route_id": self.public_route.id,
            # The drain counts the public endpoint's requests only, never the preview's.
            "public_endpoint_host": self.public_endpoint.host_name,
            "origin_hosts": {str(role): _host_of(site) for role, site in args.origins.items()},
            # What the driver requests through the public endpoint to keep its counters fed.
            "heartbeat_path": settings.app.health.path,
            "settle_seconds": settings.switch_settle_seconds,
            "quiet_seconds": settings.drain_quiet_seconds,
            "switch_floor_seconds": settings.switch_floor_seconds,
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
        self, logical: str, group: cdn.AFDOriginGroup, name: str, host: pulumi.Output[str]
    ) -> cdn.AFDOrigin:
        # The app's own name as Host: App Service routes by it with no binding, and its
        # certificate matches it. The visitors' host reaches the app as X-Forwarded-Host.
        return cdn.AFDOrigin(
            logical,
            origin_name=name,
            origin_group_name=group.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            host_name=host,
            origin_host_header=host,
            http_port=80,
            https_port=443,
            priority=1,
            weight=1000,
            enabled_state=cdn.EnabledState.ENABLED,
            enforce_certificate_name_check=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _read_only(
        self, name: str
    ) -> tuple[web.WebApp, cdn.AFDOriginGroup, tuple[cdn.RuleSet, cdn.Rule]]:
        """The refusing origin and the rule set that sends writes to it: both always exist, so
        attaching the rule set to the public route is all a switch changes."""
        foundation = self._foundation
        settings = foundation.settings
        child = pulumi.ResourceOptions(parent=self)
        app = web.WebApp(
            f"{name}-read-only-app",
            name=f"{settings.name_prefix}-readonly",
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            server_farm_id=foundation.plan.id,
            kind="app,linux",
            reserved=True,
            https_only=True,
            client_affinity_enabled=False,
            site_config=web.SiteConfigArgs(
                linux_fx_version=READ_ONLY_RUNTIME,
                app_command_line=read_only_server(),
                always_on=True,
                min_tls_version=MIN_TLS_VERSION,
                scm_min_tls_version=MIN_TLS_VERSION,
                ftps_state=web.FtpsState.DISABLED,
                ip_security_restrictions=[front_door_only(foundation.front_door_id)],
                ip_security_restrictions_default_action=web.DefaultAction.DENY,
            ),
            tags={"zdd-instance": "read-only"},
            opts=child,
        )
        group = self._origin_group(f"{name}-read-only-origins", "readonly")
        origin = self._origin(f"{name}-read-only", group, "readonly", app.default_host_name)
        rule_set = cdn.RuleSet(
            f"{name}-read-only-rules",
            rule_set_name="readonly",
            profile_name=foundation.profile.name,
            resource_group_name=foundation.resource_group_name,
            opts=child,
        )
        rule = cdn.Rule(
            f"{name}-read-only-writes",
            rule_name="writes",
            rule_set_name=rule_set.name,
            profile_name=foundation.profile.name,
            resource_group_name=foundation.resource_group_name,
            order=1,
            conditions=[
                cdn.DeliveryRuleRequestMethodConditionArgs(
                    name="RequestMethod",
                    parameters=cdn.RequestMethodMatchConditionParametersArgs(
                        type_name="DeliveryRuleRequestMethodConditionParameters",
                        operator=cdn.RequestMethodOperator.EQUAL,
                        negate_condition=True,
                        match_values=list(SAFE_METHODS),
                    ),
                )
            ],
            actions=[
                # Without a cache configuration, caching is off for these requests.
                cdn.DeliveryRuleRouteConfigurationOverrideActionArgs(
                    name="RouteConfigurationOverride",
                    parameters=cdn.RouteConfigurationOverrideActionParametersArgs(
                        type_name="DeliveryRuleRouteConfigurationOverrideActionParameters",
                        origin_group_override=cdn.OriginGroupOverrideArgs(
                            origin_group=cdn.ResourceReferenceArgs(id=group.id),
                            forwarding_protocol=cdn.ForwardingProtocol.HTTPS_ONLY,
                        ),
                    ),
                )
            ],
            match_processing_behavior=cdn.MatchProcessingBehavior.STOP,
            # The override needs an origin in its group.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[origin]),
        )
        return app, group, (rule_set, rule)

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
                custom_block_response_status_code=PREVIEW_BLOCK_STATUS,
                custom_block_response_body=base64.b64encode(PREVIEW_BLOCK_BODY.encode()).decode(),
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
        rule_set: cdn.RuleSet | None = None,
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
            rule_sets=[cdn.ResourceReferenceArgs(id=rule_set.id)] if rule_set else [],
            supported_protocols=[cdn.AFDEndpointProtocols.HTTP, cdn.AFDEndpointProtocols.HTTPS],
            patterns_to_match=["/*"],
            forwarding_protocol=cdn.ForwardingProtocol.HTTPS_ONLY,
            https_redirect=cdn.HttpsRedirect.ENABLED,
            link_to_default_domain=cdn.LinkToDefaultDomain.ENABLED,
            enabled_state=cdn.EnabledState.ENABLED,
            # A route needs an origin in its group.
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
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
