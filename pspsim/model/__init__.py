"""The simulated datacenter: workload, protocol variants, control and data plane."""
