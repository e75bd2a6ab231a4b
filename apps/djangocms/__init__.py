"""The django CMS site smooth-deploy deploys (a package only so that type checking tells its
build_releases.py from the MLflow one)."""
