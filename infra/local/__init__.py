"""The `local` target: processes, SQLite files and a local reverse proxy, as real Pulumi resources."""
