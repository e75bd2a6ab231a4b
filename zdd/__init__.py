"""smooth-deploy: zero-downtime deployments of a database-backed web site, driven by Pulumi."""
