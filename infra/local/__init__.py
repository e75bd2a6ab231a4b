"""The `local` target: processes, SQLite files and a reverse proxy, as real Pulumi resources."""
