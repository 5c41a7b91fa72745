"""The `kidsart` command."""
