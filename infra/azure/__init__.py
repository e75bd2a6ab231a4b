"""The `azure` target: App Service, Azure SQL and Front Door Standard on pulumi-azure-native.

One ComponentResource per concept of `infra.components`, one module each: `database`
(AzureDatabase), `site` (AzureSite), `frontdoor` (AzureFrontDoor), plus `foundation`
(AzureFoundation: what every phase shares), `settings` (the stack's Azure keys) and
`restore_point` (the restore point's proof); `target` binds them to the stack config. Logical
names never depend on the phase, so a phase change updates the primary's resources in place
and never replaces them.
"""
