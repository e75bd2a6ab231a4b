"""The Pulumi side of smooth-deploy: the program and its components, per target."""
