"""The django CMS site smooth-deploy deploys."""
