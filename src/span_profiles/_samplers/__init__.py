"""Samplers behind one contract (filled in below)."""
