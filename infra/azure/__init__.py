"""The `azure` target: App Service, Azure SQL and Front Door Standard on pulumi-azure-native."""
