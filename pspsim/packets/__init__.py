"""The packet tier: real packets, really sealed and opened, for a sample of hosts."""
