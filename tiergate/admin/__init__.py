"""The control plane: admin API, command line and offline jobs. Jobs talk to the gateway by writing rows."""
