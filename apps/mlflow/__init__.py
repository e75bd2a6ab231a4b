"""MLflow's tracking server as a site smooth-deploy deploys."""
