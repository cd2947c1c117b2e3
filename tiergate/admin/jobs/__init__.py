"""Offline jobs of the control plane: they read data and write reports or rows, never serve traffic."""
