"""The third-party sites the tests deploy, each with the build of its releases."""
